"""Who is calling: the API key in ``authorization: Bearer <key>``, checked against the profile service's
``KeyVerificationService`` and remembered for a short while.

Answers are cached (good and bad alike) for ``cache_seconds``: a revoked key stops working within that time, and a
client hammering with a wrong key costs one lookup per period. Concurrent first calls with one key share one lookup.
The cache is bounded (least recently used out first), so neither many keys nor junk ones grow it without end.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

import grpc
from grpc import aio

from voice.auth.v1 import key_verification_service_pb2 as pb
from voice.auth.v1 import key_verification_service_pb2_grpc as pb_grpc
from voice_common.api_keys import SCOPES, key_prefix, key_sha256, well_formed
from voice_common.errors import Unauthenticated, Unavailable, quoted
from voice_gateway.rate_limits import Limits

AUTHORIZATION_KEY = "authorization"
_CACHE_ENTRIES = 100_000
_LOOKUP_TIMEOUT_SECONDS = 5.0
_HOW_TO_GET_ONE = (
    "`make run` saved an admin key in <data dir>/admin-api-key; `voice-admin keys create` makes others"
)


@dataclass(frozen=True)
class Principal:
    """A caller the gateway let in: whose key, which tenant, what it may do."""

    key_id: str
    prefix: str
    tenant: str
    scopes: frozenset[str]
    limits: Limits
    expires_at: float | None = None  # seconds since the epoch

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class Authenticator(Protocol):
    async def authenticate(self, metadata: Sequence[tuple[str, Any]]) -> Principal: ...


def bearer_key(metadata: Sequence[tuple[str, Any]]) -> str:
    """The key of ``authorization: Bearer <key>``, or Unauthenticated saying what is wrong with the header."""
    values = [value for name, value in metadata if name == AUTHORIZATION_KEY]
    if not values:
        raise Unauthenticated(
            f"this call needs an API key in 'authorization: Bearer <key>' ({_HOW_TO_GET_ONE})"
        )
    if len(values) > 1:
        raise Unauthenticated("the authorization metadata key was sent more than once; send one API key")
    value = values[0] if isinstance(values[0], str) else ""
    scheme, _, key = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated(
            "the authorization metadata must be 'Bearer <API key>'; got a value starting "
            f"{quoted(value[:6], 8)}"
        )
    return key.strip()


class KeyAuthenticator:
    def __init__(
        self,
        channel: aio.Channel,
        defaults: Limits,
        cache_seconds: float,
        credential: Sequence[tuple[str, str]] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._stub: Any = pb_grpc.KeyVerificationServiceStub(channel)
        self._defaults = defaults
        self._cache_seconds = cache_seconds
        self._credential = tuple(credential)  # the internal credential's metadata
        self._clock = clock
        self._wall_clock = wall_clock
        self._cache: OrderedDict[str, tuple[float, Principal | Unauthenticated]] = OrderedDict()
        self._lookups: dict[str, asyncio.Future[Principal | Unauthenticated]] = {}

    async def authenticate(self, metadata: Sequence[tuple[str, Any]]) -> Principal:
        key = bearer_key(metadata)
        if not well_formed(key):
            # Not a key this platform issues (a typo, another service's token): no lookup.
            raise Unauthenticated(f"unknown API key ({_HOW_TO_GET_ONE})")
        digest = key_sha256(key)
        answer = self._cached(digest)
        if answer is None:
            answer = await self._look_up(digest)
        if isinstance(answer, Unauthenticated):
            raise Unauthenticated(answer.message)
        if answer.expired(self._wall_clock()):
            raise Unauthenticated(f"API key {key_prefix(key)} has expired; ask an admin for a new one")
        return answer

    def _cached(self, digest: str) -> Principal | Unauthenticated | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        until, answer = entry
        if self._clock() >= until:
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return answer

    async def _look_up(self, digest: str) -> Principal | Unauthenticated:
        running = self._lookups.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Principal | Unauthenticated] = asyncio.get_running_loop().create_future()
        self._lookups[digest] = future
        try:
            answer = await self._ask(digest)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._lookups[digest]
        future.set_result(answer)
        if self._cache_seconds > 0:
            self._cache[digest] = (self._clock() + self._cache_seconds, answer)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return answer

    async def _ask(self, digest: str) -> Principal | Unauthenticated:
        try:
            response = await self._stub.VerifyApiKey(
                pb.VerifyApiKeyRequest(key_sha256=digest),
                timeout=_LOOKUP_TIMEOUT_SECONDS,
                metadata=self._credential,
            )
        except aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                return Unauthenticated(error.details() or "unknown API key")
            raise Unavailable(
                "the gateway cannot check API keys now (the profile service answered "
                f"{error.code().name}: {error.details()}); retry shortly"
            ) from None
        record = response.api_key
        limits = Limits(
            record.rate_limits.requests_per_second,
            record.rate_limits.burst,
            record.rate_limits.max_concurrent_streams,
        ).over(self._defaults)
        return Principal(
            key_id=record.id,
            prefix=record.prefix,
            tenant=record.tenant,
            scopes=frozenset(record.scopes),
            limits=limits,
            expires_at=record.expire_time.ToDatetime(UTC).timestamp()
            if record.HasField("expire_time")
            else None,
        )


class AuthenticationOff:
    """``GATEWAY_AUTHENTICATION=off``: every call acts for one tenant with every scope."""

    def __init__(self, tenant: str, defaults: Limits) -> None:
        self._principal = Principal("", "(no key)", tenant, frozenset(SCOPES), defaults)

    async def authenticate(self, metadata: Sequence[tuple[str, Any]]) -> Principal:
        return self._principal
