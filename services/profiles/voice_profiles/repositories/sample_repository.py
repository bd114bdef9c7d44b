"""Reference samples in the database, scoped by tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voice_common.errors import NotFound
from voice_profiles.domain.entities import Sample, SampleWarningInfo, TranscriptState
from voice_profiles.domain.paging import Cursor
from voice_profiles.repositories.keyset import newest_first
from voice_profiles.repositories.models import SampleRow


def _to_entity(row: SampleRow) -> Sample:
    return Sample(
        id=row.id,
        profile_id=row.profile_id,
        reference_text=row.reference_text,
        transcript_state=TranscriptState(row.transcript_state),
        file_name=row.file_name,
        mime_type=row.mime_type,
        original_size_bytes=row.original_size_bytes,
        original_key=row.original_key,
        audio_key=row.audio_key,
        audio_sha256=row.audio_sha256,
        duration_seconds=row.duration_seconds,
        sample_rate=row.sample_rate,
        peak_dbfs=row.peak_dbfs,
        rms_dbfs=row.rms_dbfs,
        warnings=tuple(SampleWarningInfo(w["code"], w["message"]) for w in row.warnings),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SampleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, tenant_id: str, sample: Sample) -> Sample:
        self._session.add(
            SampleRow(
                id=sample.id,
                tenant_id=tenant_id,
                profile_id=sample.profile_id,
                reference_text=sample.reference_text,
                transcript_state=sample.transcript_state.value,
                file_name=sample.file_name,
                mime_type=sample.mime_type,
                original_size_bytes=sample.original_size_bytes,
                original_key=sample.original_key,
                audio_key=sample.audio_key,
                audio_sha256=sample.audio_sha256,
                duration_seconds=sample.duration_seconds,
                sample_rate=sample.sample_rate,
                peak_dbfs=sample.peak_dbfs,
                rms_dbfs=sample.rms_dbfs,
                warnings=[{"code": w.code, "message": w.message} for w in sample.warnings],
                created_at=sample.created_at,
                updated_at=sample.updated_at,
            )
        )
        await self._session.flush()
        return sample

    async def get(self, tenant_id: str, sample_id: str) -> Sample:
        query = select(SampleRow).where(SampleRow.tenant_id == tenant_id, SampleRow.id == sample_id)
        row = (await self._session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound("sample", sample_id)
        return _to_entity(row)

    async def list_for_profile(
        self, tenant_id: str, profile_id: str, cursor: Cursor | None = None, limit: int | None = None
    ) -> list[Sample]:
        query = select(SampleRow).where(SampleRow.tenant_id == tenant_id, SampleRow.profile_id == profile_id)
        query = newest_first(query, SampleRow.created_at, SampleRow.id, cursor)
        if limit is not None:
            query = query.limit(limit)
        return [_to_entity(row) for row in (await self._session.execute(query)).scalars()]

    async def update(self, tenant_id: str, sample_id: str, values: dict[str, Any], now: datetime) -> None:
        statement = (
            update(SampleRow)
            .where(SampleRow.tenant_id == tenant_id, SampleRow.id == sample_id)
            .values(**values, updated_at=now)
        )
        result = await self._session.execute(statement)
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("sample", sample_id)

    async def delete(self, tenant_id: str, sample_id: str) -> None:
        await self._session.execute(
            delete(SampleRow).where(SampleRow.tenant_id == tenant_id, SampleRow.id == sample_id)
        )

    async def all_object_keys(self) -> set[str]:
        """Every object key any sample row refers to, across tenants (for the doctor)."""
        rows = (await self._session.execute(select(SampleRow.original_key, SampleRow.audio_key))).all()
        return {key for pair in rows for key in pair}
