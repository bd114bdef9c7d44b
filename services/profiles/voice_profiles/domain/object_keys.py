"""Object keys, derived only from tenant and server-made ids (never from file names or other user strings)."""

from __future__ import annotations

TENANTS_PREFIX = "tenants/"


def sample_original_key(tenant_id: str, sample_id: str) -> str:
    return f"tenants/{tenant_id}/samples/{sample_id}/original"


def sample_audio_key(tenant_id: str, sample_id: str) -> str:
    return f"tenants/{tenant_id}/samples/{sample_id}/normalized.wav"


def generation_audio_key(tenant_id: str, generation_id: str) -> str:
    return f"tenants/{tenant_id}/generations/{generation_id}/audio.wav"
