"""Reference samples in the database, scoped by tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update
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

    # Automatic transcription (domain.transcripts). Every write is conditional on the sample still needing a text,
    # so a text the user typed meanwhile is never overwritten and a deleted sample is simply not found.

    async def needing_transcript(
        self, now: datetime, max_attempts: int, limit: int
    ) -> list[tuple[str, str, int]]:
        """(tenant_id, sample_id, attempts so far) of samples, any tenant, that need a text and are due; oldest
        first."""
        query = (
            select(SampleRow.tenant_id, SampleRow.id, SampleRow.transcript_attempts)
            .where(
                SampleRow.transcript_state == TranscriptState.NEEDED.value,
                SampleRow.transcript_attempts < max_attempts,
                or_(
                    SampleRow.transcript_next_attempt_at.is_(None),
                    SampleRow.transcript_next_attempt_at <= now,
                ),
            )
            .order_by(SampleRow.created_at, SampleRow.id)
            .limit(limit)
        )
        return [
            (tenant, sample_id, attempts)
            for tenant, sample_id, attempts in (await self._session.execute(query))
        ]

    async def claim_transcript(
        self, tenant_id: str, sample_id: str, attempts_seen: int, retry_at: datetime
    ) -> bool:
        """Count one more attempt and hold the sample until ``retry_at``; False when another worker claimed it
        since ``attempts_seen`` was read, or it no longer needs a text."""
        statement = (
            update(SampleRow)
            .where(
                SampleRow.tenant_id == tenant_id,
                SampleRow.id == sample_id,
                SampleRow.transcript_state == TranscriptState.NEEDED.value,
                SampleRow.transcript_attempts == attempts_seen,
            )
            .values(transcript_attempts=attempts_seen + 1, transcript_next_attempt_at=retry_at)
        )
        return bool((await self._session.execute(statement)).rowcount)  # type: ignore[attr-defined]

    async def release_transcript_claim(self, tenant_id: str, sample_id: str, attempts_seen: int) -> None:
        """Undo a claim whose attempt never reached the recogniser (ASR down): due again, nothing counted."""
        await self._session.execute(
            update(SampleRow)
            .where(
                SampleRow.tenant_id == tenant_id,
                SampleRow.id == sample_id,
                SampleRow.transcript_state == TranscriptState.NEEDED.value,
                SampleRow.transcript_attempts == attempts_seen + 1,
            )
            .values(transcript_attempts=attempts_seen, transcript_next_attempt_at=None)
        )

    async def store_machine_transcript(
        self, tenant_id: str, sample_id: str, text: str, now: datetime
    ) -> bool:
        """Store a recognised text, only while the sample still needs one; True when stored."""
        statement = (
            update(SampleRow)
            .where(
                SampleRow.tenant_id == tenant_id,
                SampleRow.id == sample_id,
                SampleRow.transcript_state == TranscriptState.NEEDED.value,
            )
            .values(
                reference_text=text,
                transcript_state=TranscriptState.MACHINE.value,
                transcript_next_attempt_at=None,
                updated_at=now,
            )
        )
        return bool((await self._session.execute(statement)).rowcount)  # type: ignore[attr-defined]

    async def transcript_attempts(self, tenant_id: str, sample_id: str) -> tuple[int, datetime | None]:
        """Attempts made and when the next may run (for tests and operators)."""
        query = select(SampleRow.transcript_attempts, SampleRow.transcript_next_attempt_at).where(
            SampleRow.tenant_id == tenant_id, SampleRow.id == sample_id
        )
        row = (await self._session.execute(query)).one_or_none()
        if row is None:
            raise NotFound("sample", sample_id)
        return row[0], row[1]

    async def delete(self, tenant_id: str, sample_id: str) -> None:
        await self._session.execute(
            delete(SampleRow).where(SampleRow.tenant_id == tenant_id, SampleRow.id == sample_id)
        )

    async def all_object_keys(self) -> set[str]:
        """Every object key any sample row refers to, across tenants (for the doctor)."""
        rows = (await self._session.execute(select(SampleRow.original_key, SampleRow.audio_key))).all()
        return {key for pair in rows for key in pair}
