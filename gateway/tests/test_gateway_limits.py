"""Per-key limits at the gateway: calls a second (token bucket with burst) and streams open at once; beyond them,
RESOURCE_EXHAUSTED with RetryInfo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_harness import Stack, bearer, trailers
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.errors import ResourceExhausted
from voice_gateway.rate_limits import KeyLimiter, Limits
from voice_profiles.domain.api_keys import RateLimits


def retry_delay(error: aio.AioRpcError) -> float:
    status = status_pb2.Status.FromString(trailers(error)["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(info) for detail in status.details), status
    return info.retry_delay.ToTimedelta().total_seconds()


async def test_calls_beyond_the_keys_rate_are_refused_with_a_time_to_retry(stack: Stack) -> None:
    key = await stack.key("limited", limits=RateLimits(requests_per_second=2, burst=2))
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    for _ in range(2):
        await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    with pytest.raises(aio.AioRpcError) as caught:
        await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 calls a second" in (caught.value.details() or "")
    delay = retry_delay(caught.value)
    assert 0 < delay <= 0.5
    await asyncio.sleep(delay + 0.05)
    await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    # Another key of the same tenant has its own bucket.
    other = await stack.key("limited")
    await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(other))


async def test_streams_beyond_the_keys_limit_are_refused_until_one_ends(stack: Stack) -> None:
    key = await stack.key("streams", limits=RateLimits(max_concurrent_streams=1))
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    release = asyncio.Event()
    profile = (await profiles.CreateProfile(pb.CreateProfileRequest(name="S"), metadata=bearer(key))).profile

    async def held_upload() -> AsyncIterator[pb.AddSampleRequest]:
        yield pb.AddSampleRequest(metadata=pb.SampleMetadata(profile_id=profile.id, reference_text="x"))
        await release.wait()

    first = profiles.AddSample(held_upload(), metadata=bearer(key))
    await asyncio.sleep(0.3)  # the first stream is open at the gateway

    async def one_message() -> AsyncIterator[pb.AddSampleRequest]:
        yield pb.AddSampleRequest(metadata=pb.SampleMetadata(profile_id=profile.id, reference_text="x"))

    with pytest.raises(aio.AioRpcError) as caught:
        await profiles.AddSample(one_message(), metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 streaming calls open" in (caught.value.details() or "")
    assert retry_delay(caught.value) > 0
    # Unary calls are not streams: still fine.
    await profiles.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    release.set()
    with pytest.raises(aio.AioRpcError):
        await first  # an upload without audio: refused by the service, and the slot is free again
    with pytest.raises(aio.AioRpcError) as caught:
        await profiles.AddSample(one_message(), metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # reached the service this time


def test_the_bucket_refills_at_the_rate_and_holds_the_burst() -> None:
    now = [0.0]
    limiter = KeyLimiter(clock=lambda: now[0])
    limits = Limits(requests_per_second=10, burst=3, max_concurrent_streams=1)
    for _ in range(3):
        limiter.admit("k", "vk_x", limits)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("k", "vk_x", limits)
    assert caught.value.retry_after_seconds == pytest.approx(0.1)
    now[0] += 0.1
    limiter.admit("k", "vk_x", limits)
    now[0] += 100  # a long pause refills the bucket to its burst, no more
    for _ in range(3):
        limiter.admit("k", "vk_x", limits)
    with pytest.raises(ResourceExhausted):
        limiter.admit("k", "vk_x", limits)
