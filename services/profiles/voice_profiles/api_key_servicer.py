"""voice.auth.v1.ApiKeyService (a tenant's admin manages its keys) and the internal KeyVerificationService (the
gateway checks a client's key): map protobuf messages to domain.api_keys and back, nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import timestamp_pb2
from grpc import aio

from voice.auth.v1 import api_key_service_pb2 as pb
from voice.auth.v1 import api_key_service_pb2_grpc as pb_grpc
from voice.auth.v1 import key_verification_service_pb2 as verification_pb
from voice.auth.v1 import key_verification_service_pb2_grpc as verification_pb_grpc
from voice_common.server.durations import optional_timedelta
from voice_common.tenancy import current_tenant
from voice_profiles.domain.api_keys import ApiKeyRecord, ApiKeys, RateLimits

Context = aio.ServicerContext[Any, Any]


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def api_key_to_proto(record: ApiKeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=record.id,
        prefix=record.prefix,
        tenant=record.tenant,
        name=record.name,
        scopes=list(record.scopes),
        rate_limits=pb.RateLimits(
            requests_per_second=record.limits.requests_per_second,
            burst=record.limits.burst,
            max_concurrent_streams=record.limits.max_concurrent_streams,
        ),
        create_time=_timestamp(record.created_at),
        last_used_time=_timestamp(record.last_used_at),
        revoke_time=_timestamp(record.revoked_at),
        expire_time=_timestamp(record.expires_at),
    )


class ApiKeyServicer(pb_grpc.ApiKeyServiceServicer):
    """Every call acts for the caller's tenant (the gateway sets it from the caller's key)."""

    def __init__(self, api_keys: ApiKeys) -> None:
        self._api_keys = api_keys

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        created = await self._api_keys.create(
            current_tenant(),
            request.name,
            list(request.scopes),
            RateLimits(
                requests_per_second=request.rate_limits.requests_per_second,
                burst=request.rate_limits.burst,
                max_concurrent_streams=request.rate_limits.max_concurrent_streams,
            ),
            optional_timedelta(request, "ttl"),
        )
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(created.record), secret=created.secret)

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        records = await self._api_keys.list(current_tenant(), request.include_inactive)
        return pb.ListApiKeysResponse(api_keys=[api_key_to_proto(record) for record in records])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        record = await self._api_keys.revoke(current_tenant(), request.id)
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(record))


class KeyVerificationServicer(verification_pb_grpc.KeyVerificationServiceServicer):
    """Internal, for the gateway. Not tenant-scoped: the key's record names its tenant."""

    def __init__(self, api_keys: ApiKeys) -> None:
        self._api_keys = api_keys

    async def VerifyApiKey(
        self, request: verification_pb.VerifyApiKeyRequest, context: Context
    ) -> verification_pb.VerifyApiKeyResponse:
        record = await self._api_keys.verify(request.key_sha256)
        return verification_pb.VerifyApiKeyResponse(api_key=api_key_to_proto(record))
