"""Deletes voice prompts nobody used for ``TTS_PROMPT_TTL_SECONDS`` (the prompt layout: voice_common.prompt_keys).

"Used" is the object's last-modified time: written when the prompt is built, renewed by the prompt cache when it
serves the prompt (at most every ``refresh_seconds``, a fraction of the TTL, so a prompt in use never looks older
than that). A sweep lists the tenants (one level of ``tenants/``), then each tenant's ``prompts/`` folder with the
objects' times, and deletes what is older than the TTL; it also deletes what is left under the old layout's
``tts/prompts/`` (nothing renews those). Prompts of inline references, of deleted profiles (one written by a
request racing the profile's deletion) and of old sample sets all go this way.

Every replica may sweep at once: deleting twice deletes nothing. A prompt touched between a sweep's listing and its
delete is deleted all the same; the replica that serves it writes it again at its next touch, another replica
rebuilds it on a miss. TTL 0 keeps prompts forever (no sweep, no touches).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from voice_common.object_store import ObjectStore, validate_key
from voice_common.periodic import repeat
from voice_common.prompt_keys import LEGACY_PROMPTS_PREFIX, TENANTS_PREFIX, tenant_prompts_prefix

log = logging.getLogger(__name__)

# A prompt in use is touched once per TTL / REFRESH_FRACTION, so one used within the last 7/8 of the TTL is never
# deleted; sweeps run as often, but at least hourly (a listing of the prompts, not of every object).
REFRESH_FRACTION = 8
MAX_SWEEP_INTERVAL_SECONDS = 3600.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class PromptSweepReport:
    examined: int
    deleted: int


class PromptExpiry:
    def __init__(
        self, store: ObjectStore, ttl_seconds: float, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    @property
    def refresh_seconds(self) -> float:
        """How often the prompt cache renews a prompt it serves; 0 (never) when prompts never expire."""
        return self._ttl / REFRESH_FRACTION

    @property
    def sweep_interval_seconds(self) -> float:
        return min(self.refresh_seconds, MAX_SWEEP_INTERVAL_SECONDS)

    async def sweep_once(self) -> PromptSweepReport:
        """Delete the prompts last modified more than the TTL ago; nothing when the TTL is 0."""
        if not self.enabled:
            return PromptSweepReport(0, 0)
        cutoff = self._clock() - timedelta(seconds=self._ttl)
        prefixes = [LEGACY_PROMPTS_PREFIX]
        async for tenant in self._store.list_folders(TENANTS_PREFIX):
            prefix = tenant_prompts_prefix(tenant)
            try:
                validate_key(prefix.rstrip("/"))
            except ValueError:
                continue  # not a folder the services made (keys never have such a segment)
            prefixes.append(prefix)
        examined = deleted = 0
        for prefix in prefixes:
            old = []
            async for listed in self._store.list_objects(prefix):
                examined += 1
                if listed.modified < cutoff:
                    old.append(listed.key)
            for key in old:
                await self._store.delete(key)
            deleted += len(old)
        report = PromptSweepReport(examined, deleted)
        if deleted:
            log.info("expired voice prompts deleted", extra={"report": report.__dict__})
        return report

    async def run_forever(self) -> None:
        """Sweep now, then every :attr:`sweep_interval_seconds`; a failed sweep is logged and retried."""
        if not self.enabled:
            return
        await repeat(self.sweep_once, self.sweep_interval_seconds, what="voice prompt sweep", logger=log)
