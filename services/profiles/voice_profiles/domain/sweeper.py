"""Deletes what expired (temporary profiles, previews), retries object deletions that failed (and deletes the
objects of creates that died, when their upload lease ends), and forgets old upload request ids."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from voice_common.errors import NotFound
from voice_common.periodic import OutageCheck, repeat
from voice_profiles.domain.database_ports import Database
from voice_profiles.domain.object_cleanup import ObjectCleanup
from voice_profiles.domain.profiles import ProfileManager

log = logging.getLogger(__name__)
BATCH = 200
ABANDONED_WRITES_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True)
class SweepReport:
    profiles_deleted: int
    generations_deleted: int
    objects_deleted: int
    objects_still_failing: int
    request_ids_forgotten: int = 0
    abandoned_writes_removed: int = 0


class ExpirySweeper:
    """Safe to run in every replica at once: each delete is by id, and deleting twice deletes nothing."""

    def __init__(
        self,
        database: Database,
        profiles: ProfileManager,
        cleanup: ObjectCleanup,
        clock: Callable[[], datetime],
        request_id_retention: timedelta,
    ) -> None:
        self._database = database
        self._profiles = profiles
        self._cleanup = cleanup
        self._clock = clock
        self._request_id_retention = request_id_retention
        # Abandoned writes are rare (a process killed mid-write) and finding them walks the store: once an hour.
        self._abandoned_writes_due: datetime | None = None

    async def sweep_once(self) -> SweepReport:
        now = self._clock()
        async with self._database.transaction() as tx:
            expired_profiles = await tx.profiles.expired_any_tenant(now, BATCH)
            expired_generations = await tx.generations.expired_any_tenant(now, BATCH)
        profiles_deleted = 0
        for tenant_id, profile_id in expired_profiles:
            try:
                await self._profiles.delete(tenant_id, profile_id)
                profiles_deleted += 1
            except NotFound:
                pass  # another replica or the owner got there first
        pending: list[tuple[int, str]] = []
        if expired_generations:
            async with self._database.transaction() as tx:
                for tenant_id, generation_id in expired_generations:
                    try:
                        generation = await tx.generations.get(tenant_id, generation_id)
                    except NotFound:
                        continue
                    await tx.generations.delete(tenant_id, generation_id)
                    ids = await tx.pending_deletions.add([generation.audio_key], now)
                    pending.append((ids[0], generation.audio_key))
            await self._cleanup.delete_committed(pending)
        deleted, failing = await self._cleanup.drain()
        async with self._database.transaction() as tx:
            forgotten = await tx.upload_requests.forget_older_than(now - self._request_id_retention)
        abandoned = 0
        if self._abandoned_writes_due is None or now >= self._abandoned_writes_due:
            abandoned = await self._cleanup.remove_abandoned_writes()
            self._abandoned_writes_due = now + ABANDONED_WRITES_INTERVAL
        report = SweepReport(profiles_deleted, len(pending), deleted, failing, forgotten, abandoned)
        if profiles_deleted or pending or deleted or failing or forgotten or abandoned:
            log.info("sweep", extra={"report": report.__dict__})
        return report

    async def run_forever(self, interval_seconds: float, outage: OutageCheck | None = None) -> None:
        await repeat(self.sweep_once, interval_seconds, what="sweep", logger=log, outage=outage)
