"""Where the TTS service keeps voice-clone prompts in the object store, and whose each one is.

The TTS service writes and expires them; the profile service deletes a profile's prompts with the profile and its
doctor accounts for them. Both read the layout from here (docs/consistency.md lists every key):

* ``tenants/<tenant>/prompts/profiles/<profile-id>/<model-hash>/<key>.safetensors``: a profile's voice;
* ``tenants/<tenant>/prompts/inline/<model-hash>/<key>.safetensors``: inline reference clips (previews).

Prompts sit under their tenant, so nothing of one tenant is ever read for another, and a profile's prompts are one
prefix that goes with the profile. ``tts/prompts/`` held every prompt before this layout; nothing reads it any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from voice_common.object_store.base import validate_key

TENANTS_PREFIX = "tenants/"
LEGACY_PROMPTS_PREFIX = "tts/prompts/"
_PROMPTS = "prompts"
_PROFILES = "profiles"
_INLINE = "inline"


@dataclass(frozen=True)
class PromptOwner:
    """Whose prompt: a tenant's profile, or (``profile_id`` None) the tenant's inline references."""

    tenant: str
    profile_id: str | None = None

    @property
    def prefix(self) -> str:
        """The folder of this owner's prompts, ending in ``/``."""
        if self.profile_id is None:
            folder = f"{tenant_prompts_prefix(self.tenant)}{_INLINE}"
        else:
            folder = f"{tenant_prompts_prefix(self.tenant)}{_PROFILES}/{self.profile_id}"
        return f"{validate_key(folder)}/"


def tenant_prompts_prefix(tenant: str) -> str:
    """Every prompt of one tenant lies below this prefix (ends in ``/``)."""
    return f"{TENANTS_PREFIX}{tenant}/{_PROMPTS}/"


def profile_prompts_prefix(tenant: str, profile_id: str) -> str:
    """The prompts of one profile's voice (ends in ``/``): deleted with the profile."""
    return PromptOwner(tenant, profile_id).prefix


def is_prompt_key(key: str) -> bool:
    """Whether the key lies in some tenant's prompt folder (well formed or not)."""
    parts = key.split("/")
    return len(parts) > 3 and f"{parts[0]}/" == TENANTS_PREFIX and parts[2] == _PROMPTS


def prompt_owner(key: str) -> PromptOwner | None:
    """The owner of a prompt key of this layout; None for any other key (including a malformed prompt key)."""
    parts = key.split("/")
    if not is_prompt_key(key):
        return None
    if parts[3] == _INLINE and len(parts) == 6:
        return PromptOwner(parts[1])
    if parts[3] == _PROFILES and len(parts) == 7:
        return PromptOwner(parts[1], parts[4])
    return None
