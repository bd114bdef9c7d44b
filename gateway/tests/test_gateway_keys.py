"""API keys at the gateway: no key, a malformed or unknown one, a revoked or expired one, a missing scope; the
tenant comes from the key alone; health answers anyone, reflection needs a key and shows the public services only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import grpc
import pytest
from gateway_harness import Stack, bearer, start_stack
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.auth.v1 import api_key_service_pb2_grpc as keys_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_pb_grpc
from voice_common.api_keys import SCOPE_PROFILES_READ, SCOPE_TTS, new_key
from voice_common.config import CommonSettings

CACHE_SECONDS = 0.3


@pytest.fixture(scope="module")
async def short_cache(gateway_common: CommonSettings) -> AsyncIterator[Stack]:
    """A gateway that remembers key checks for 0.3 s."""
    started = await start_stack(gateway_common, {"key_cache_seconds": CACHE_SECONDS})
    yield started
    await started.close()


def auth_failures(reason: str) -> float:
    return REGISTRY.get_sample_value("voice_gateway_auth_failures_total", {"reason": reason}) or 0.0


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


def list_profiles(stack: Stack, metadata: tuple[tuple[str, str], ...]) -> object:
    return pb_grpc.ProfileServiceStub(stack.channel).ListProfiles(pb.ListProfilesRequest(), metadata=metadata)


async def test_no_key_a_malformed_header_or_an_unknown_key_is_unauthenticated(stack: Stack) -> None:
    code, message = await code_of(list_profiles(stack, ()))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer <key>" in message
    code, message = await code_of(list_profiles(stack, (("authorization", "Basic dXNlcjpwYXNz"),)))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "must be 'Bearer <API key>'" in message
    unknown_before = auth_failures("unknown")
    code, message = await code_of(list_profiles(stack, bearer("not-a-key")))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "unknown API key" in message
    assert auth_failures("unknown") == unknown_before + 1
    code, message = await code_of(list_profiles(stack, bearer(new_key())))  # well formed, never issued
    assert code is grpc.StatusCode.UNAUTHENTICATED and "unknown" in message.lower()


async def test_a_key_without_the_scope_is_permission_denied(stack: Stack) -> None:
    reader = await stack.key("scoped", scopes=(SCOPE_PROFILES_READ,))
    assert (await code_of(list_profiles(stack, bearer(reader))))[0] is grpc.StatusCode.OK
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    code, message = await code_of(
        profiles.CreateProfile(pb.CreateProfileRequest(name="x"), metadata=bearer(reader))
    )
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "'profiles:write'" in message and reader[:11] in message and reader not in message
    tts_only = await stack.key("scoped", scopes=(SCOPE_TTS,))
    tts = tts_pb_grpc.TtsServiceStub(stack.channel)
    # Model control is an admin's: a key for synthesis cannot unload the model.
    code, _ = await code_of(tts.UnloadModel(tts_pb.UnloadModelRequest(), metadata=bearer(tts_only)))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    keys = keys_pb_grpc.ApiKeyServiceStub(stack.channel)
    code, _ = await code_of(keys.ListApiKeys(keys_pb.ListApiKeysRequest(), metadata=bearer(tts_only)))
    assert code is grpc.StatusCode.PERMISSION_DENIED


async def test_a_revoked_key_stops_working_within_the_cache_time(short_cache: Stack) -> None:
    stack = short_cache
    key = await stack.key("revoking")
    admin = await stack.key("revoking")
    assert (await code_of(list_profiles(stack, bearer(key))))[0] is grpc.StatusCode.OK
    keys = keys_pb_grpc.ApiKeyServiceStub(stack.channel)
    listed = await keys.ListApiKeys(keys_pb.ListApiKeysRequest(), metadata=bearer(admin))
    key_id = next(item.id for item in listed.api_keys if key.startswith(item.prefix))
    await keys.RevokeApiKey(keys_pb.RevokeApiKeyRequest(id=key_id), metadata=bearer(admin))
    await asyncio.sleep(CACHE_SECONDS + 0.1)
    revoked_before = auth_failures("revoked")
    code, message = await code_of(list_profiles(stack, bearer(key)))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "revoked" in message, message
    assert auth_failures("revoked") == revoked_before + 1


async def test_an_expired_key_is_unauthenticated(stack: Stack) -> None:
    key = await stack.key("expiring", ttl=timedelta(seconds=1))
    assert (await code_of(list_profiles(stack, bearer(key))))[0] is grpc.StatusCode.OK
    await asyncio.sleep(1.1)
    expired_before = auth_failures("expired")
    # Still in the gateway's cache: the cached record's expiry is checked too.
    code, message = await code_of(list_profiles(stack, bearer(key)))
    assert code is grpc.StatusCode.UNAUTHENTICATED and "expired" in message, message
    assert auth_failures("expired") == expired_before + 1


async def test_the_tenant_is_the_keys_whatever_the_client_claims(stack: Stack) -> None:
    owner = await stack.key("tenant-b")
    other = await stack.key("tenant-a")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    mine = (
        await profiles.CreateProfile(pb.CreateProfileRequest(name="B's voice"), metadata=bearer(owner))
    ).profile
    spoofed = (*bearer(other), ("x-voice-tenant", "tenant-b"))
    code, _ = await code_of(profiles.GetProfile(pb.GetProfileRequest(id=mine.id), metadata=spoofed))
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = await code_of(
        profiles.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=mine.id, name="taken"), update_mask={"paths": ["name"]}
            ),
            metadata=spoofed,
        )
    )
    assert code is grpc.StatusCode.NOT_FOUND
    code, _ = await code_of(profiles.DeleteProfile(pb.DeleteProfileRequest(id=mine.id), metadata=spoofed))
    assert code is grpc.StatusCode.NOT_FOUND
    listed = await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=spoofed)
    assert mine.id not in [profile.id for profile in listed.profiles]
    still = (await profiles.GetProfile(pb.GetProfileRequest(id=mine.id), metadata=bearer(owner))).profile
    assert still == mine


async def test_keys_are_managed_per_tenant_through_the_gateway(stack: Stack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = await stack.key(tenant)
    keys = keys_pb_grpc.ApiKeyServiceStub(stack.channel)
    created = await keys.CreateApiKey(
        keys_pb.CreateApiKeyRequest(name="ci", scopes=["tts"]), metadata=bearer(admin)
    )
    assert created.secret.startswith(created.api_key.prefix) and created.api_key.tenant == tenant
    code, _ = await code_of(list_profiles(stack, bearer(created.secret)))
    assert code is grpc.StatusCode.PERMISSION_DENIED  # works, but only for synthesis
    stranger = await stack.key("someone-else")
    code, _ = await code_of(
        keys.RevokeApiKey(keys_pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=bearer(stranger))
    )
    assert code is grpc.StatusCode.NOT_FOUND


async def test_health_answers_without_a_key_and_mirrors_each_backend(stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(stack.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def status(name: str) -> int:
        return int((await health.Check(health_pb2.HealthCheckRequest(service=name))).status)

    for _ in range(100):
        if await status("voice.profiles.v1.ProfileService") == serving:
            break
        await asyncio.sleep(0.05)
    assert await status("") == serving
    assert await status("voice.profiles.v1.ProfileService") == serving
    assert await status("voice.auth.v1.ApiKeyService") == serving
    # Nothing answers at the TTS and ASR targets of this stack.
    assert await status("voice.tts.v1.TtsService") == not_serving
    assert await status("voice.asr.v1.AsrService") == not_serving


async def reflected_services(stack: Stack, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel)

    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: list[str] = []
    async for response in stub.ServerReflectionInfo(ask(), metadata=metadata):
        names.extend(service.name for service in response.list_services_response.service)
    return sorted(names)


async def test_reflection_needs_a_key_and_lists_exactly_the_public_services(stack: Stack) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await reflected_services(stack, ())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    key = await stack.key("reflecting", scopes=(SCOPE_TTS,))  # any valid key
    assert await reflected_services(stack, bearer(key)) == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "voice.asr.v1.AsrService",
        "voice.auth.v1.ApiKeyService",
        "voice.profiles.v1.ProfileService",
        "voice.tts.v1.TtsService",
    ]


async def test_authentication_off_acts_for_the_default_tenant(gateway_common: CommonSettings) -> None:
    stack = await start_stack(gateway_common, {"authentication": "off"})
    try:
        profiles = pb_grpc.ProfileServiceStub(stack.channel)
        created = await profiles.CreateProfile(
            pb.CreateProfileRequest(name="open"), metadata=(("x-voice-tenant", "elsewhere"),)
        )
        stored = await stack.profiles.profiles.get(gateway_common.default_tenant, created.profile.id)
        assert stored.name == "open"
    finally:
        await stack.close()
