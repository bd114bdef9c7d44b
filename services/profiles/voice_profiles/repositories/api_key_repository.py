"""The ``api_keys`` table (models.ApiKeyRow) for domain.api_keys, and the transaction it runs in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from voice_common.db import create_session_factory
from voice_profiles.domain.api_keys import ApiKeyRecord, KeyTaken, RateLimits
from voice_profiles.repositories.models import ApiKeyRow


def _record(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        prefix=row.prefix,
        tenant=row.tenant_id,
        name=row.name,
        scopes=tuple(row.scopes.split()),
        limits=RateLimits(row.requests_per_second, row.burst, row.max_concurrent_streams),
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
    )


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: ApiKeyRecord, key_sha256: str) -> None:
        self._session.add(
            ApiKeyRow(
                id=record.id,
                prefix=record.prefix,
                key_sha256=key_sha256,
                tenant_id=record.tenant,
                name=record.name,
                scopes=" ".join(record.scopes),
                requests_per_second=record.limits.requests_per_second,
                burst=record.limits.burst,
                max_concurrent_streams=record.limits.max_concurrent_streams,
                created_at=record.created_at,
                last_used_at=record.last_used_at,
                revoked_at=record.revoked_at,
                expires_at=record.expires_at,
            )
        )
        try:
            # Flushed here so a prefix collision surfaces as KeyTaken, where the caller draws another key.
            await self._session.flush()
        except IntegrityError as error:
            raise KeyTaken(record.prefix) from error

    async def _one(self, *conditions: ColumnElement[bool]) -> ApiKeyRecord | None:
        # populate_existing: a row this session loaded before an UPDATE (revoke, touch) is read afresh.
        query = select(ApiKeyRow).where(*conditions).execution_options(populate_existing=True)
        row = (await self._session.execute(query)).scalar_one_or_none()
        return _record(row) if row is not None else None

    async def get(self, tenant: str, key_id: str) -> ApiKeyRecord | None:
        return await self._one(ApiKeyRow.tenant_id == tenant, ApiKeyRow.id == key_id)

    async def get_any_tenant(self, key_id: str) -> ApiKeyRecord | None:
        return await self._one(ApiKeyRow.id == key_id)

    async def find_by_prefix_any_tenant(self, prefix: str) -> ApiKeyRecord | None:
        return await self._one(ApiKeyRow.prefix == prefix)

    async def find_by_hash(self, key_sha256: str) -> ApiKeyRecord | None:
        return await self._one(ApiKeyRow.key_sha256 == key_sha256)

    async def list(self, tenant: str | None, active_at: datetime | None) -> list[ApiKeyRecord]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if tenant is not None:
            query = query.where(ApiKeyRow.tenant_id == tenant)
        if active_at is not None:
            query = query.where(
                ApiKeyRow.revoked_at.is_(None),
                or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > active_at),
            )
        return [_record(row) for row in (await self._session.execute(query)).scalars()]

    async def revoke(self, key_id: str, now: datetime) -> None:
        await self._session.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )

    async def touch(self, key_id: str, now: datetime, older_than: datetime) -> bool:
        result = await self._session.execute(
            update(ApiKeyRow)
            .where(
                ApiKeyRow.id == key_id,
                or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < older_than),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class ApiKeyDatabase:
    """Transactions over the ``api_keys`` table alone, on the service's engine: keys share no transaction with
    profiles, samples or generations."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions: async_sessionmaker[AsyncSession] = create_session_factory(engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[ApiKeyRepository]:
        async with self._sessions() as session, session.begin():
            yield ApiKeyRepository(session)
