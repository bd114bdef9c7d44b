"""Forwarding through the gateway to a real profile service: every shape the profile service has, byte for byte."""

from __future__ import annotations

import grpc
import pytest
from gateway_harness import Stack, bearer

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc


async def test_unary_call_reaches_the_service_for_the_keys_tenant(stack: Stack) -> None:
    key = await stack.key("acme")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    created = await profiles.CreateProfile(pb.CreateProfileRequest(name="Narrator"), metadata=bearer(key))
    got = await profiles.GetProfile(pb.GetProfileRequest(id=created.profile.id), metadata=bearer(key))
    assert got.profile == created.profile
    stored = await stack.profiles.profiles.get("acme", created.profile.id)
    assert stored.name == "Narrator"


async def test_no_key_is_unauthenticated(stack: Stack) -> None:
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await profiles.ListProfiles(pb.ListProfilesRequest())
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (caught.value.details() or "")
