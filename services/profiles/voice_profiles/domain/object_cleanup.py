"""Deleting objects without ever orphaning them.

Rules (docs/consistency.md):
- create: objects are written first, the row commits after; if the commit fails the objects are deleted again
  (``discard``), and if even that fails the keys go to the outbox for the sweeper.
- delete: rows are deleted and their keys written to the outbox in ONE transaction (``Transaction.pending_deletions``);
  after the commit ``delete_committed`` removes the objects and their outbox rows. A failure leaves the outbox row,
  which the sweeper retries with back-off (``drain``).
- an outbox key ending in ``/`` is a prefix: every object under it, as listed when the delete runs (a profile's
  voice prompts, which the TTS service writes without a row here).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from voice_common.object_store import ObjectStore
from voice_profiles.repositories.unit_of_work import Database

log = logging.getLogger(__name__)


class ObjectCleanup:
    def __init__(self, database: Database, store: ObjectStore, clock: Callable[[], datetime]) -> None:
        self._database = database
        self._store = store
        self._clock = clock

    async def delete_committed(self, pending: list[tuple[int, str]]) -> int:
        """Delete objects whose rows are gone; returns how many are still pending (left to the sweeper)."""
        if not pending:
            return 0
        results = await asyncio.gather(*(self._delete(key) for _, key in pending), return_exceptions=True)
        done = [row_id for (row_id, _), result in zip(pending, results, strict=True) if result is None]
        failures = [
            (row_id, key, result)
            for (row_id, key), result in zip(pending, results, strict=True)
            if isinstance(result, BaseException)
        ]
        try:
            async with self._database.transaction() as tx:
                await tx.pending_deletions.done(done)
                for row_id, key, error in failures:
                    log.warning(
                        "object delete failed, the sweeper will retry",
                        extra={"key": key, "error": str(error)},
                    )
                    await tx.pending_deletions.failed(row_id, repr(error), self._clock())
        except Exception:
            # The outbox rows are still there; the sweeper deletes the objects (again) later. Harmless.
            log.exception("could not update the deletion outbox")
        return len(failures)

    async def _delete(self, key: str) -> None:
        if not key.endswith("/"):
            await self._store.delete(key)
            return
        for listed in [listed async for listed in self._store.list_keys(key)]:
            await self._store.delete(listed)

    async def discard(self, keys: list[str]) -> None:
        """Remove objects written for a create that did not commit."""
        results = await asyncio.gather(*(self._store.delete(key) for key in keys), return_exceptions=True)
        leftover = [
            key for key, result in zip(keys, results, strict=True) if isinstance(result, BaseException)
        ]
        if not leftover:
            return
        log.warning("could not remove uploaded objects of a failed create", extra={"keys": leftover})
        try:
            async with self._database.transaction() as tx:
                await tx.pending_deletions.add(leftover, self._clock())
        except Exception:
            log.exception(
                "orphaned objects left behind; `voice-admin doctor` lists them", extra={"keys": leftover}
            )

    async def drain(self, limit: int = 500) -> tuple[int, int]:
        """Retry due outbox entries; returns (deleted, still failing)."""
        async with self._database.transaction() as tx:
            due = await tx.pending_deletions.due(self._clock(), limit)
        failing = await self.delete_committed(due)
        return len(due) - failing, failing
