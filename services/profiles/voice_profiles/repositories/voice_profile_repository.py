"""Profiles in the database. Every query is scoped by tenant except the sweeper's, which say so in their name."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from voice_common.errors import AlreadyExists, NotFound
from voice_profiles.domain.entities import Profile, ProfileFilter
from voice_profiles.domain.paging import Cursor
from voice_profiles.repositories.keyset import newest_first
from voice_profiles.repositories.models import ProfileRow, SampleRow


def name_key(name: str) -> str:
    return name.casefold()


_SAMPLE_COUNT = (
    select(func.count(SampleRow.id))
    .where(SampleRow.profile_id == ProfileRow.id)
    .scalar_subquery()
    .label("sample_count")
)
_TOTAL_SECONDS = (
    select(func.coalesce(func.sum(SampleRow.duration_seconds), 0.0))
    .where(SampleRow.profile_id == ProfileRow.id)
    .scalar_subquery()
    .label("total_sample_seconds")
)
_PROFILE_COLUMNS = (
    ProfileRow.id,
    ProfileRow.name,
    ProfileRow.description,
    ProfileRow.language,
    ProfileRow.created_at,
    ProfileRow.updated_at,
    ProfileRow.expires_at,
)


def _profile_query() -> Select[Any]:
    # Plain columns, not ORM objects: reads are the hot path and skip the identity map. The counts come from the
    # samples table in the same statement, so they can never drift from the rows.
    return select(*_PROFILE_COLUMNS, _SAMPLE_COUNT, _TOTAL_SECONDS)


# Built once: SQLAlchemy caches the compiled form, and GetProfile runs it thousands of times a second.
_GET_PROFILE = _profile_query().where(
    ProfileRow.tenant_id == bindparam("tenant_id"), ProfileRow.id == bindparam("profile_id")
)


def _to_entity(row: Any) -> Profile:
    return Profile(
        id=row.id,
        name=row.name,
        description=row.description,
        language=row.language,
        created_at=row.created_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        sample_count=int(row.sample_count or 0),
        total_sample_seconds=float(row.total_sample_seconds or 0.0),
    )


class ProfileReads:
    """The hot read, usable on a session or on a bare connection (``Database.read``)."""

    def __init__(self, executor: AsyncSession | AsyncConnection) -> None:
        self._executor = executor

    async def get(self, tenant_id: str, profile_id: str) -> Profile:
        params = {"tenant_id": tenant_id, "profile_id": profile_id}
        row = (await self._executor.execute(_GET_PROFILE, params)).first()
        if row is None:
            raise NotFound("profile", profile_id)
        return _to_entity(row)


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self,
        tenant_id: str,
        *,
        profile_id: str,
        name: str,
        description: str,
        language: str,
        now: datetime,
        expires_at: datetime | None,
    ) -> Profile:
        row = ProfileRow(
            id=profile_id,
            tenant_id=tenant_id,
            name=name,
            name_key=name_key(name),
            description=description,
            language=language,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )
        self._session.add(row)
        await self._flush_unique(name)
        return Profile(
            id=profile_id,
            name=name,
            description=description,
            language=language,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
        )

    async def _flush_unique(self, name: str) -> None:
        try:
            await self._session.flush()
        except IntegrityError as error:
            raise AlreadyExists(f"a profile named {name!r} already exists; choose another name") from error

    async def get(self, tenant_id: str, profile_id: str) -> Profile:
        return await ProfileReads(self._session).get(tenant_id, profile_id)

    async def lock(self, tenant_id: str, profile_id: str) -> None:
        """Lock the profile's row for update where the database supports it (Postgres), until the transaction
        ends."""
        query = (
            select(ProfileRow)
            .where(ProfileRow.tenant_id == tenant_id, ProfileRow.id == profile_id)
            .with_for_update()
        )
        if (await self._session.execute(query)).scalar_one_or_none() is None:
            raise NotFound("profile", profile_id)

    async def find_by_name(self, tenant_id: str, name: str) -> Profile | None:
        query = _profile_query().where(
            ProfileRow.tenant_id == tenant_id, ProfileRow.name_key == name_key(name)
        )
        row = (await self._session.execute(query)).first()
        return None if row is None else _to_entity(row)

    async def list_page(
        self, tenant_id: str, filters: ProfileFilter, cursor: Cursor | None, limit: int
    ) -> list[Profile]:
        query = _profile_query().where(ProfileRow.tenant_id == tenant_id)
        if filters.name_contains:
            query = query.where(
                ProfileRow.name_key.contains(name_key(filters.name_contains), autoescape=True)
            )
        if filters.language:
            query = query.where(ProfileRow.language == filters.language)
        query = newest_first(query, ProfileRow.created_at, ProfileRow.id, cursor).limit(limit)
        return [_to_entity(row) for row in (await self._session.execute(query)).all()]

    async def update(self, tenant_id: str, profile_id: str, values: dict[str, Any], now: datetime) -> None:
        if "name" in values:
            values = {**values, "name_key": name_key(values["name"])}
        statement = (
            update(ProfileRow)
            .where(ProfileRow.tenant_id == tenant_id, ProfileRow.id == profile_id)
            .values(**values, updated_at=now)
        )
        try:
            result = await self._session.execute(statement)
        except IntegrityError as error:
            raise AlreadyExists(
                f"a profile named {values.get('name', '')!r} already exists; choose another name"
            ) from error
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("profile", profile_id)

    async def delete(self, tenant_id: str, profile_id: str) -> None:
        await self._session.execute(
            delete(ProfileRow).where(ProfileRow.tenant_id == tenant_id, ProfileRow.id == profile_id)
        )

    async def all_ids(self) -> set[tuple[str, str]]:
        """(tenant_id, profile_id) of every profile, across tenants (for the doctor: whose voice prompts are owned)."""
        query = select(ProfileRow.tenant_id, ProfileRow.id)
        return {(tenant, pid) for tenant, pid in (await self._session.execute(query)).all()}

    async def expired_any_tenant(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant_id, profile_id) of expired profiles across all tenants, for the sweeper."""
        query = (
            select(ProfileRow.tenant_id, ProfileRow.id)
            .where(ProfileRow.expires_at.is_not(None), ProfileRow.expires_at <= now)
            .limit(limit)
        )
        return [(tenant, pid) for tenant, pid in (await self._session.execute(query)).all()]
