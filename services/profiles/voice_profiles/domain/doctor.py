"""Finds what the consistency rules should make impossible: rows whose objects are missing, objects no row owns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voice_common.object_store import ObjectNotFound, ObjectStore
from voice_profiles.domain.object_keys import TENANTS_PREFIX
from voice_profiles.repositories.unit_of_work import Database


@dataclass
class DoctorReport:
    rows_without_objects: list[str] = field(default_factory=list)
    objects_without_rows: list[str] = field(default_factory=list)
    pending_deletions: int = 0

    @property
    def healthy(self) -> bool:
        return not self.rows_without_objects and not self.objects_without_rows


class ConsistencyDoctor:
    def __init__(self, database: Database, store: ObjectStore) -> None:
        self._database = database
        self._store = store

    async def examine(self) -> DoctorReport:
        # Objects are listed first and rows read after: an upload that commits in between then looks healthy
        # rather than orphaned.
        stored = {key async for key in self._store.list_keys(TENANTS_PREFIX)}
        async with self._database.transaction() as tx:
            referenced = await tx.samples.all_object_keys() | await tx.generations.all_object_keys()
            pending = await tx.pending_deletions.all_keys()
        report = DoctorReport(pending_deletions=len(pending))
        report.objects_without_rows = sorted(stored - referenced - pending)
        unseen = sorted(referenced - stored)
        # A listing can lag behind a write on some stores; confirm each miss directly.
        present = await asyncio.gather(*(self._exists(key) for key in unseen))
        report.rows_without_objects = [key for key, ok in zip(unseen, present, strict=True) if not ok]
        return report

    async def _exists(self, key: str) -> bool:
        try:
            await self._store.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def delete_orphans(self, report: DoctorReport) -> int:
        """Delete the objects no row owns (run when no upload is in flight, or re-run examine first)."""
        for key in report.objects_without_rows:
            await self._store.delete(key)
        return len(report.objects_without_rows)
