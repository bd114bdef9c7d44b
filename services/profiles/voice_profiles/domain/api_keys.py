"""API keys: issuing, listing and revoking a tenant's keys, and checking a key for the gateway.

A key (:mod:`voice_common.api_keys`) is shown once, when it is made; the database keeps its public prefix and the
SHA-256 of the whole key. Verification finds a key by that hash, so the gateway never sends the key itself.

``last_used_at`` is brought up to date at most once a minute per key: every gateway request of a busy key would
otherwise be a write, while "used in the last minute" is all a person reading a list needs. The update is
conditional (only when the stored time is older than a minute), so replicas verifying the same key at once write
it once.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

from voice_common import api_keys as key_format
from voice_common import resource_ids
from voice_common.config import TENANT_PATTERN
from voice_common.errors import ErrorList, InvalidArgument, NotFound, Unauthenticated, quoted
from voice_profiles.domain.validation import check_name

# How stale a key's last-used time may get (see the module's docstring).
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Prefixes are 36**8 values, so a collision is all but impossible; when one happens a fresh key is drawn.
_CREATE_ATTEMPTS = 5
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_KIND = "API key"


class KeyTaken(Exception):
    """The new key's prefix or hash is already stored (raised by ``ApiKeyRecords.add``)."""


@dataclass(frozen=True)
class RateLimits:
    """What a gateway replica allows one key; zero means the gateway's default."""

    requests_per_second: float = 0.0
    burst: int = 0
    max_concurrent_streams: int = 0


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    prefix: str
    tenant: str
    name: str
    scopes: tuple[str, ...]
    limits: RateLimits
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None

    def state(self, now: datetime) -> str:
        """ "active", "revoked" or "expired" (revoked wins: it was a person's decision)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class NewApiKey:
    record: ApiKeyRecord
    # The whole key: shown to its owner once, never stored.
    secret: str


class ApiKeyRecords(Protocol):
    """The ``api_keys`` table as the domain uses it. Methods named ``*_any_tenant`` are for the operator's CLI
    and for verification (which learns the tenant from the key)."""

    async def add(self, record: ApiKeyRecord, key_sha256: str) -> None:
        """KeyTaken when the prefix or the hash is already stored."""
        ...

    async def get(self, tenant: str, key_id: str) -> ApiKeyRecord | None: ...

    async def get_any_tenant(self, key_id: str) -> ApiKeyRecord | None: ...

    async def find_by_prefix_any_tenant(self, prefix: str) -> ApiKeyRecord | None: ...

    async def find_by_hash(self, key_sha256: str) -> ApiKeyRecord | None: ...

    async def list(self, tenant: str | None, active_at: datetime | None) -> list[ApiKeyRecord]:
        """Oldest first; every tenant's when ``tenant`` is None; only keys active at ``active_at`` when set."""
        ...

    async def revoke(self, key_id: str, now: datetime) -> None:
        """Set the revocation time unless one is set already (the first revocation is the one that counts)."""
        ...

    async def touch(self, key_id: str, now: datetime, older_than: datetime) -> bool:
        """Set last_used_at to ``now`` when it is unset or before ``older_than``; whether it did."""
        ...


class ApiKeyDatabase(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[ApiKeyRecords]:
        """Commits when the block ends normally, rolls back when it raises."""
        ...


def _instant(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_scopes(scopes: Iterable[str], field: str = "scopes") -> tuple[str, ...]:
    """The scopes in the platform's order without repeats; InvalidArgument naming the unknown ones."""
    given = list(scopes)
    if not given:
        raise InvalidArgument(f"{field}: give at least one of {', '.join(key_format.SCOPES)}", field=field)
    unknown = [scope for scope in given if scope not in key_format.SCOPES]
    if unknown:
        raise InvalidArgument(
            f"unknown scope {', '.join(quoted(scope) for scope in unknown)}; "
            f"scopes are {', '.join(key_format.SCOPES)}",
            field=field,
        )
    return tuple(scope for scope in key_format.SCOPES if scope in given)


def check_limits(limits: RateLimits, field: str = "rate_limits") -> RateLimits:
    errors = ErrorList()
    rps = limits.requests_per_second
    if not math.isfinite(rps) or rps < 0:
        errors.add(f"{field}.requests_per_second", f"must be a number >= 0 (0: the default), not {rps}")
    for name, value in (("burst", limits.burst), ("max_concurrent_streams", limits.max_concurrent_streams)):
        if value < 0:
            errors.add(f"{field}.{name}", f"must be >= 0 (0: the default), not {value}")
    errors.raise_if_any()
    return limits


def check_ttl(ttl: timedelta | None, field: str = "ttl") -> timedelta | None:
    if ttl is not None and ttl <= timedelta(0):
        raise InvalidArgument(
            f"{field} must be positive when set (unset: the key never expires)", field=field
        )
    return ttl


def check_key_sha256(value: str, field: str = "key_sha256") -> str:
    if not _SHA256_HEX.match(value):
        raise InvalidArgument(
            f"{field} {quoted(value)} is not a SHA-256: send the 64 lower-case hex digits of the key's hash",
            field=field,
        )
    return value


def check_tenant(value: str, field: str = "tenant") -> str:
    if not TENANT_PATTERN.match(value):
        raise InvalidArgument(
            f"{field} {quoted(value)} is not a tenant id: use 1-63 characters of a-z, 0-9, '-' or '_'",
            field=field,
        )
    return value


class ApiKeys:
    def __init__(self, database: ApiKeyDatabase, clock: Callable[[], datetime]) -> None:
        self._database = database
        self._clock = clock

    async def create(
        self,
        tenant: str,
        name: str,
        scopes: Sequence[str],
        limits: RateLimits = RateLimits(),
        ttl: timedelta | None = None,
    ) -> NewApiKey:
        errors = ErrorList()
        checked_name = errors.collect(lambda: check_name(name))
        checked_scopes = errors.collect(lambda: check_scopes(scopes))
        errors.collect(lambda: check_limits(limits))
        errors.collect(lambda: check_ttl(ttl))
        errors.raise_if_any()
        assert checked_name is not None and checked_scopes is not None
        for attempt in range(_CREATE_ATTEMPTS):
            secret = key_format.new_key()
            now = self._clock()
            record = ApiKeyRecord(
                id=str(uuid.uuid4()),
                prefix=key_format.key_prefix(secret),
                tenant=tenant,
                name=checked_name,
                scopes=checked_scopes,
                limits=limits,
                created_at=now,
                last_used_at=None,
                revoked_at=None,
                expires_at=now + ttl if ttl is not None else None,
            )
            try:
                async with self._database.transaction() as keys:
                    await keys.add(record, key_format.key_sha256(secret))
            except KeyTaken:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return NewApiKey(record, secret)
        raise AssertionError("unreachable")

    async def list(self, tenant: str | None, include_inactive: bool = False) -> list[ApiKeyRecord]:
        """The tenant's keys, oldest first (every tenant's when ``tenant`` is None: the operator's CLI)."""
        async with self._database.transaction() as keys:
            return await keys.list(tenant, None if include_inactive else self._clock())

    async def revoke(self, tenant: str, key_id: str) -> ApiKeyRecord:
        """Revoke one of the tenant's keys (another tenant's id is NOT_FOUND); revoking again returns the record
        with its first revocation time."""
        checked_id = resource_ids.check_id("key", key_id, "id")
        async with self._database.transaction() as keys:
            record = await keys.get(tenant, checked_id)
            if record is None:
                raise NotFound(_KIND, key_id)
            return await self._revoke(keys, record)

    async def revoke_any_tenant(self, id_or_prefix: str) -> ApiKeyRecord:
        """The operator's revoke: by id or by prefix ("vk_" and 8 characters), whatever the tenant."""
        async with self._database.transaction() as keys:
            if id_or_prefix.startswith(key_format.KEY_START):
                record = await keys.find_by_prefix_any_tenant(key_format.key_prefix(id_or_prefix))
            else:
                record = await keys.get_any_tenant(resource_ids.check_id("key", id_or_prefix, "id"))
            if record is None:
                raise NotFound(_KIND, id_or_prefix)
            return await self._revoke(keys, record)

    async def _revoke(self, keys: ApiKeyRecords, record: ApiKeyRecord) -> ApiKeyRecord:
        if record.revoked_at is not None:
            return record
        now = self._clock()
        await keys.revoke(record.id, now)
        # Read back: a concurrent revoke may have committed first, and its time is the one that stands.
        stored = await keys.get_any_tenant(record.id)
        return stored or replace(record, revoked_at=now)

    async def verify(self, key_sha256: str) -> ApiKeyRecord:
        """The active key with this hash, its last-used time brought up to date (at most once a minute);
        Unauthenticated saying why not otherwise."""
        check_key_sha256(key_sha256)
        now = self._clock()
        async with self._database.transaction() as keys:
            record = await keys.find_by_hash(key_sha256)
            if record is None:
                raise Unauthenticated("unknown API key")
            if record.revoked_at is not None:
                raise Unauthenticated(f"API key {record.prefix} was revoked at {_instant(record.revoked_at)}")
            if record.expires_at is not None and record.expires_at <= now:
                raise Unauthenticated(f"API key {record.prefix} expired at {_instant(record.expires_at)}")
            if await keys.touch(record.id, now, now - LAST_USED_RESOLUTION):
                record = replace(record, last_used_at=now)
            return record
