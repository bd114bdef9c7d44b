"""ApiKeyService and the internal KeyVerificationService through a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from profiles_harness import FakeClock, Harness, expect_error, tenant_metadata

from voice.auth.v1 import api_key_service_pb2 as pb
from voice.auth.v1 import api_key_service_pb2_grpc as pb_grpc
from voice.auth.v1 import key_verification_service_pb2 as verification_pb
from voice.auth.v1 import key_verification_service_pb2_grpc as verification_pb_grpc
from voice_common import api_keys as key_format
from voice_profiles.app import API_KEY_SERVICE_NAME, KEY_VERIFICATION_SERVICE_NAME
from voice_profiles.domain.api_keys import ApiKeys
from voice_profiles.repositories.api_key_repository import ApiKeyDatabase


def _stubs(
    harness: Harness,
) -> tuple[pb_grpc.ApiKeyServiceStub, verification_pb_grpc.KeyVerificationServiceStub]:
    return (
        pb_grpc.ApiKeyServiceStub(harness.channel),
        verification_pb_grpc.KeyVerificationServiceStub(harness.channel),
    )


def _verify_request(secret: str) -> verification_pb.VerifyApiKeyRequest:
    return verification_pb.VerifyApiKeyRequest(key_sha256=key_format.key_sha256(secret))


async def _create(
    harness: Harness, tenant: str, name: str = "ci", **fields: object
) -> pb.CreateApiKeyResponse:
    keys, _ = _stubs(harness)
    request = pb.CreateApiKeyRequest(name=name, scopes=["tts", "asr"], **fields)  # type: ignore[arg-type]
    return await keys.CreateApiKey(request, metadata=tenant_metadata(tenant))


async def test_create_verify_list_revoke(harness: Harness, tenant: str) -> None:
    keys, verification = _stubs(harness)
    md = tenant_metadata(tenant)
    created = await _create(
        harness,
        tenant,
        rate_limits=pb.RateLimits(requests_per_second=4.0, burst=8, max_concurrent_streams=2),
        ttl=duration_pb2.Duration(seconds=3600),
    )
    key = created.api_key
    assert key_format.well_formed(created.secret) and created.secret.startswith(key.prefix)
    assert key.tenant == tenant and list(key.scopes) == ["tts", "asr"]
    assert key.rate_limits.burst == 8 and key.rate_limits.max_concurrent_streams == 2
    assert key.expire_time.ToDatetime() - key.create_time.ToDatetime() == timedelta(hours=1)
    assert not key.HasField("last_used_time") and not key.HasField("revoke_time")

    # Verification names no tenant: the gateway learns it from the key.
    verified = (await verification.VerifyApiKey(_verify_request(created.secret))).api_key
    assert verified.id == key.id and verified.tenant == tenant and verified.HasField("last_used_time")
    listed = (await keys.ListApiKeys(pb.ListApiKeysRequest(), metadata=md)).api_keys
    assert [k.id for k in listed] == [key.id] and listed[0].HasField("last_used_time")

    revoked = (await keys.RevokeApiKey(pb.RevokeApiKeyRequest(id=key.id), metadata=md)).api_key
    assert revoked.HasField("revoke_time")
    again = (await keys.RevokeApiKey(pb.RevokeApiKeyRequest(id=key.id), metadata=md)).api_key
    assert again.revoke_time == revoked.revoke_time
    error = await expect_error(
        lambda: verification.VerifyApiKey(_verify_request(created.secret)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert f"API key {key.prefix} was revoked at" in (error.details() or "")
    assert list((await keys.ListApiKeys(pb.ListApiKeysRequest(), metadata=md)).api_keys) == []
    (inactive,) = (await keys.ListApiKeys(pb.ListApiKeysRequest(include_inactive=True), metadata=md)).api_keys
    assert inactive.id == key.id and inactive.revoke_time == revoked.revoke_time


async def test_another_tenant_cannot_list_or_revoke_a_key(harness: Harness, tenant: str) -> None:
    keys, verification = _stubs(harness)
    created = await _create(harness, tenant)
    intruder = tenant_metadata(tenant + "-b")
    everything = pb.ListApiKeysRequest(include_inactive=True)
    assert list((await keys.ListApiKeys(everything, metadata=intruder)).api_keys) == []
    await expect_error(
        lambda: keys.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    (still,) = (await keys.ListApiKeys(everything, metadata=tenant_metadata(tenant))).api_keys
    assert not still.HasField("revoke_time")
    # Verification is not tenant-scoped: whatever tenant the call names, the record's tenant is the key's.
    verified = await verification.VerifyApiKey(_verify_request(created.secret), metadata=intruder)
    assert verified.api_key.tenant == tenant


async def test_bad_requests_name_their_fields(harness: Harness, tenant: str) -> None:
    keys, verification = _stubs(harness)
    md = tenant_metadata(tenant)
    bad_create = pb.CreateApiKeyRequest(
        name="",
        scopes=["tts", "root"],
        rate_limits=pb.RateLimits(burst=-1),
        ttl=duration_pb2.Duration(seconds=-1),
    )
    error = await expect_error(
        lambda: keys.CreateApiKey(bad_create, metadata=md), grpc.StatusCode.INVALID_ARGUMENT
    )
    details = error.details() or ""
    for part in ("name:", "scopes:", "'root'", "rate_limits.burst:", "ttl:"):
        assert part in details, details
    await expect_error(
        lambda: keys.RevokeApiKey(pb.RevokeApiKeyRequest(id="not-an-id"), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    for bad_hash in ("", "abc", key_format.key_sha256("x").upper()):
        await expect_error(
            lambda bad_hash=bad_hash: verification.VerifyApiKey(
                verification_pb.VerifyApiKeyRequest(key_sha256=bad_hash)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    unknown = await expect_error(
        lambda: verification.VerifyApiKey(_verify_request(key_format.new_key())),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert unknown.details() == "unknown API key"
    assert (
        list((await keys.ListApiKeys(pb.ListApiKeysRequest(include_inactive=True), metadata=md)).api_keys)
        == []
    )


async def test_an_expired_key_is_refused(harness: Harness, tenant: str) -> None:
    # Made two hours in the past with a one-hour lifetime, on the server's database.
    clock = FakeClock()
    clock.now = datetime.now(UTC) - timedelta(hours=2)
    created = await ApiKeys(ApiKeyDatabase(harness.app.database.engine), clock).create(
        tenant, "old", ["tts"], ttl=timedelta(hours=1)
    )
    _, verification = _stubs(harness)
    error = await expect_error(
        lambda: verification.VerifyApiKey(_verify_request(created.secret)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert f"API key {created.record.prefix} expired at" in (error.details() or "")


async def test_reflection_and_health_show_both_key_services(harness: Harness) -> None:
    assert API_KEY_SERVICE_NAME == "voice.auth.v1.ApiKeyService"
    assert KEY_VERIFICATION_SERVICE_NAME == "voice.auth.v1.KeyVerificationService"
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = [answer async for answer in stub.ServerReflectionInfo(iter([request]))]
    listed = {service.name for service in response.list_services_response.service}
    assert {API_KEY_SERVICE_NAME, KEY_VERIFICATION_SERVICE_NAME} <= listed
    health = health_pb2_grpc.HealthStub(harness.channel)
    for name in (API_KEY_SERVICE_NAME, KEY_VERIFICATION_SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
