"""Limits and defaults the domain enforces; built from the service settings in ``__main__``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from voice_common.audio.reference_audio import DEFAULT_MAX_SECONDS, DEFAULT_MIN_SECONDS


@dataclass(frozen=True)
class Limits:
    max_sample_bytes: int = 50 * 1024 * 1024
    # The TTS service holds inline references to the same defaults (voice_common.audio.reference_audio).
    min_sample_seconds: float = DEFAULT_MIN_SECONDS
    max_sample_seconds: float = DEFAULT_MAX_SECONDS
    max_generation_bytes: int = 200 * 1024 * 1024
    max_generation_seconds: float = 1800.0
    max_import_bytes: int = 1024 * 1024 * 1024
    max_reference_text_chars: int = 2000
    max_generation_text_chars: int = 20000
    max_samples_per_profile: int = 50
    temporary_profile_ttl: timedelta = timedelta(hours=12)
    preview_ttl: timedelta = timedelta(minutes=20)
    max_ttl: timedelta = timedelta(days=30)
    sample_rate: int = 24000
    read_cache_seconds: float = 1.0
    read_cache_entries: int = 10_000
    # How long the objects of a create in progress are protected from the sweeper: far above the longest create
    # (from the last byte received to the commit), so only a create whose process died loses them.
    upload_lease: timedelta = timedelta(hours=1)
    # How long an upload's request id is remembered (domain.idempotency).
    request_id_retention: timedelta = timedelta(hours=24)
