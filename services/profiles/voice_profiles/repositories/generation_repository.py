"""Generation history in the database, scoped by tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from voice_common.errors import NotFound
from voice_profiles.domain.entities import (
    Generation,
    GenerationFilter,
    GenerationStats,
    ProfileGenerationStats,
)
from voice_profiles.domain.paging import Cursor
from voice_profiles.repositories.keyset import newest_first
from voice_profiles.repositories.models import GenerationRow


def _to_entity(row: GenerationRow) -> Generation:
    return Generation(
        id=row.id,
        profile_id=row.profile_id,
        profile_name=row.profile_name,
        text=row.text,
        language=row.language,
        seed=row.seed,
        parameters=dict(row.parameters),
        model_id=row.model_id,
        duration_seconds=row.duration_seconds,
        sample_rate=row.sample_rate,
        audio_key=row.audio_key,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def _conditions(tenant_id: str, filters: GenerationFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [GenerationRow.tenant_id == tenant_id]
    if filters.profile_id:
        conditions.append(GenerationRow.profile_id == filters.profile_id)
    if filters.text_contains:
        conditions.append(
            func.lower(GenerationRow.text).contains(filters.text_contains.lower(), autoescape=True)
        )
    if filters.created_from is not None:
        conditions.append(GenerationRow.created_at >= filters.created_from)
    if filters.created_before is not None:
        conditions.append(GenerationRow.created_at < filters.created_before)
    return conditions


class GenerationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, tenant_id: str, generation: Generation) -> Generation:
        values: dict[str, Any] = {
            name: getattr(generation, name)
            for name in Generation.__dataclass_fields__
            if name not in ("parameters",)
        }
        self._session.add(
            GenerationRow(tenant_id=tenant_id, parameters=dict(generation.parameters), **values)
        )
        await self._session.flush()
        return generation

    async def get(self, tenant_id: str, generation_id: str) -> Generation:
        query = select(GenerationRow).where(
            GenerationRow.tenant_id == tenant_id, GenerationRow.id == generation_id
        )
        row = (await self._session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFound("generation", generation_id)
        return _to_entity(row)

    async def list_page(
        self, tenant_id: str, filters: GenerationFilter, cursor: Cursor | None, limit: int
    ) -> list[Generation]:
        query = select(GenerationRow).where(*_conditions(tenant_id, filters))
        query = newest_first(query, GenerationRow.created_at, GenerationRow.id, cursor).limit(limit)
        return [_to_entity(row) for row in (await self._session.execute(query)).scalars()]

    async def list_for_profile(self, tenant_id: str, profile_id: str) -> list[Generation]:
        query = select(GenerationRow).where(
            GenerationRow.tenant_id == tenant_id, GenerationRow.profile_id == profile_id
        )
        return [_to_entity(row) for row in (await self._session.execute(query)).scalars()]

    async def stats(self, tenant_id: str, filters: GenerationFilter) -> GenerationStats:
        conditions = _conditions(tenant_id, filters)
        total = (
            await self._session.execute(
                select(
                    func.count(GenerationRow.id), func.coalesce(func.sum(GenerationRow.duration_seconds), 0.0)
                ).where(*conditions)
            )
        ).one()
        grouped = await self._session.execute(
            select(
                GenerationRow.profile_id,
                func.max(GenerationRow.profile_name),
                func.count(GenerationRow.id),
                func.coalesce(func.sum(GenerationRow.duration_seconds), 0.0),
            )
            .where(*conditions)
            .group_by(GenerationRow.profile_id)
            .order_by(func.count(GenerationRow.id).desc(), GenerationRow.profile_id)
        )
        return GenerationStats(
            count=int(total[0]),
            total_duration_seconds=float(total[1]),
            by_profile=[
                ProfileGenerationStats(pid, name or "", int(count), float(seconds))
                for pid, name, count, seconds in grouped.all()
            ],
        )

    async def delete(self, tenant_id: str, generation_id: str) -> None:
        await self._session.execute(
            delete(GenerationRow).where(
                GenerationRow.tenant_id == tenant_id, GenerationRow.id == generation_id
            )
        )

    async def expired_any_tenant(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        query = (
            select(GenerationRow.tenant_id, GenerationRow.id)
            .where(GenerationRow.expires_at.is_not(None), GenerationRow.expires_at <= now)
            .limit(limit)
        )
        return [(tenant, gid) for tenant, gid in (await self._session.execute(query)).all()]

    async def all_object_keys(self) -> set[str]:
        return set((await self._session.execute(select(GenerationRow.audio_key))).scalars())
