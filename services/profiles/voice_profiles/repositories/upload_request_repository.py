"""Request ids of uploads and what they created (see models.UploadRequestRow, domain.idempotency)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voice_profiles.domain.idempotency import RecordedUpload, RequestIdTaken, UploadOperation, UploadRequest
from voice_profiles.repositories.models import UploadRequestRow


class UploadRequestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find(
        self, tenant_id: str, operation: UploadOperation, request_id: str
    ) -> RecordedUpload | None:
        row = await self._session.get(UploadRequestRow, (tenant_id, operation.value, request_id))
        if row is None:
            return None
        return RecordedUpload(row.resource_id, row.fingerprint, row.created_at)

    async def add(self, request: UploadRequest, resource_id: str, now: datetime) -> None:
        """Record what the request created; raises RequestIdTaken when another upload recorded the id first."""
        self._session.add(
            UploadRequestRow(
                tenant_id=request.tenant_id,
                operation=request.operation.value,
                request_id=request.request_id,
                resource_id=resource_id,
                fingerprint=request.fingerprint,
                created_at=now,
            )
        )
        try:
            # Flushed at once: the conflict must surface here, inside the create's statements, where the caller
            # knows the transaction did not commit.
            await self._session.flush()
        except IntegrityError as error:
            raise RequestIdTaken(request.request_id) from error

    async def forget_older_than(self, cutoff: datetime) -> int:
        """Delete every tenant's records made before ``cutoff`` (the sweeper); returns how many."""
        result = await self._session.execute(
            delete(UploadRequestRow).where(UploadRequestRow.created_at < cutoff)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
