"""Finds what the consistency rules should make impossible: rows whose objects are missing, objects no row owns.

The TTS service's voice prompts (voice_common.prompt_keys) have no rows: one of an existing profile, or of a
tenant's inline references, is owned; one of a profile that no longer exists, a malformed one, and everything under
the old ``tts/prompts/`` layout are orphans.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from voice_common.object_store import ObjectNotFound, ObjectStore
from voice_common.prompt_keys import LEGACY_PROMPTS_PREFIX, is_prompt_key, prompt_owner
from voice_profiles.domain.database_ports import Database
from voice_profiles.domain.object_keys import TENANTS_PREFIX


@dataclass
class DoctorReport:
    rows_without_objects: list[str] = field(default_factory=list)
    objects_without_rows: list[str] = field(default_factory=list)
    pending_deletions: int = 0
    prompts_owned: int = 0  # voice prompts of existing profiles and inline references
    prompts_orphaned: int = 0  # voice prompts among objects_without_rows

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
        legacy_prompts = {key async for key in self._store.list_keys(LEGACY_PROMPTS_PREFIX)}
        async with self._database.transaction() as tx:
            referenced = await tx.samples.all_object_keys() | await tx.generations.all_object_keys()
            pending = await tx.pending_deletions.all_keys()
            profiles = await tx.profiles.all_ids()
        report = DoctorReport(pending_deletions=len(pending))
        pending_prefixes = tuple(key for key in pending if key.endswith("/"))
        unowned: list[str] = sorted(legacy_prompts)
        report.prompts_orphaned = len(legacy_prompts)
        for key in stored - referenced - pending:
            if key.startswith(pending_prefixes):
                continue  # a deleted profile's prompts, already scheduled
            if is_prompt_key(key):
                owner = prompt_owner(key)
                if owner is not None and (
                    owner.profile_id is None or (owner.tenant, owner.profile_id) in profiles
                ):
                    report.prompts_owned += 1
                    continue
                report.prompts_orphaned += 1
            unowned.append(key)
        report.objects_without_rows = sorted(unowned)
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
