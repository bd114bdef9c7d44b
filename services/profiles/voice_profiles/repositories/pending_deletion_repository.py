"""The outbox of object deletions (see models.PendingObjectDeletionRow)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voice_profiles.repositories.models import PendingObjectDeletionRow


class PendingDeletionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, keys: list[str], now: datetime) -> list[int]:
        rows = [PendingObjectDeletionRow(object_key=k, created_at=now, next_attempt_at=now) for k in keys]
        self._session.add_all(rows)
        await self._session.flush()
        return [row.id for row in rows]

    async def lease(self, keys: list[str], now: datetime, until: datetime) -> list[int]:
        """Entries for objects a create is about to write, due only at ``until`` (the upload lease): if the create
        never commits (a crash), the sweeper deletes its objects then; its commit removes them (``release``)."""
        rows = [PendingObjectDeletionRow(object_key=k, created_at=now, next_attempt_at=until) for k in keys]
        self._session.add_all(rows)
        await self._session.flush()
        return [row.id for row in rows]

    async def release(self, ids: list[int], now: datetime) -> bool:
        """Remove a create's lease entries; False when any is gone or already due (the lease ran out, so the
        sweeper may be deleting the objects): the create must not commit then."""
        if not ids:
            return True
        result = await self._session.execute(
            delete(PendingObjectDeletionRow).where(
                PendingObjectDeletionRow.id.in_(ids), PendingObjectDeletionRow.next_attempt_at > now
            )
        )
        return int(result.rowcount or 0) == len(ids)  # type: ignore[attr-defined]

    async def due(self, now: datetime, limit: int) -> list[tuple[int, str]]:
        query = (
            select(PendingObjectDeletionRow.id, PendingObjectDeletionRow.object_key)
            .where(PendingObjectDeletionRow.next_attempt_at <= now)
            .order_by(PendingObjectDeletionRow.next_attempt_at)
            .limit(limit)
        )
        return [(row_id, key) for row_id, key in (await self._session.execute(query)).all()]

    async def done(self, ids: list[int]) -> None:
        if ids:
            await self._session.execute(
                delete(PendingObjectDeletionRow).where(PendingObjectDeletionRow.id.in_(ids))
            )

    async def failed(self, row_id: int, error: str, now: datetime) -> None:
        row = await self._session.get(PendingObjectDeletionRow, row_id)
        if row is None:
            return
        # Back off exponentially (capped at an hour) so a store that is down is not hammered.
        backoff = min(3600, 5 * 2 ** min(row.attempts, 10))
        await self._session.execute(
            update(PendingObjectDeletionRow)
            .where(PendingObjectDeletionRow.id == row_id)
            .values(
                attempts=row.attempts + 1,
                last_error=error[:2000],
                next_attempt_at=now + timedelta(seconds=backoff),
            )
        )

    async def all_keys(self) -> set[str]:
        return set((await self._session.execute(select(PendingObjectDeletionRow.object_key))).scalars())

    async def count(self) -> int:
        return len(await self.all_keys())
