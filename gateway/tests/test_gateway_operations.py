"""The gateway as operators see it: the drain on shutdown, metrics, and an access log without secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_harness import Stack, bearer, start_stack
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_testing.media_files import encode_file, speechlike

GET_PROFILE = "/voice.profiles.v1.ProfileService/GetProfile"


@pytest.fixture
async def own_stack(gateway_common: CommonSettings) -> AsyncIterator[Stack]:
    """A stack of its own (these tests stop its gateway), with a tenant the metrics name."""
    started = await start_stack(gateway_common, {"metric_tenants": ["ops"]})
    yield started
    await started.close()


async def test_a_drain_reports_not_serving_and_cuts_an_unfinished_upload_off_without_storing_it(
    own_stack: Stack,
) -> None:
    stack = own_stack
    key = await stack.key("ops")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    profile = (await profiles.CreateProfile(pb.CreateProfileRequest(name="D"), metadata=bearer(key))).profile
    wav = encode_file(speechlike(3.0), 24000, "wav")
    sent_all = asyncio.Event()

    async def never_finished() -> AsyncIterator[pb.AddSampleRequest]:
        yield pb.AddSampleRequest(
            metadata=pb.SampleMetadata(profile_id=profile.id, reference_text="All of it?")
        )
        # Every byte of a valid file, but the client never says it is the end: when the drain cuts the call off,
        # the gateway must not pass that on as the end of the upload (the backend would store it).
        yield pb.AddSampleRequest(chunk=wav)
        sent_all.set()
        await asyncio.sleep(30)

    # What a balancer watching the gateway sees: a stream opened before the drain (new calls are refused then).
    watch = health_pb2_grpc.HealthStub(stack.channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    upload = profiles.AddSample(never_finished(), metadata=bearer(key))
    await sent_all.wait()
    await asyncio.sleep(0.2)
    stopping = asyncio.create_task(stack.gateway.server.stop(0.5))
    answer = await asyncio.wait_for(watch.read(), timeout=0.4)
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING  # at once, while the upload still runs
    assert not upload.done()
    with pytest.raises(aio.AioRpcError) as caught:
        await upload
    assert caught.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    await stopping
    await asyncio.sleep(0.3)  # the backend had its cancellation
    direct = pb_grpc.ProfileServiceStub(stack.direct)
    samples = await direct.ListSamples(
        pb.ListSamplesRequest(profile_id=profile.id), metadata=(("x-voice-tenant", "ops"),)
    )
    assert list(samples.samples) == []  # an upload its client never finished is not a sample


async def test_a_call_running_at_the_drain_finishes_within_the_grace_period(own_stack: Stack) -> None:
    stack = own_stack
    key = await stack.key("ops")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    profile = (await profiles.CreateProfile(pb.CreateProfileRequest(name="G"), metadata=bearer(key))).profile
    release = asyncio.Event()
    wav = encode_file(speechlike(3.0), 24000, "wav")

    async def slow_upload() -> AsyncIterator[pb.AddSampleRequest]:
        yield pb.AddSampleRequest(
            metadata=pb.SampleMetadata(profile_id=profile.id, reference_text="All of it.")
        )
        await release.wait()
        yield pb.AddSampleRequest(chunk=wav)

    upload = profiles.AddSample(slow_upload(), metadata=bearer(key))
    await asyncio.sleep(0.2)
    stopping = asyncio.create_task(stack.gateway.server.stop(10.0))
    await asyncio.sleep(0.2)
    release.set()
    response = await upload
    assert response.sample.profile_id == profile.id
    await stopping


async def test_metrics_count_calls_per_method_code_and_bounded_tenant(own_stack: Stack) -> None:
    stack = own_stack
    named = await stack.key("ops")
    unnamed = await stack.key("not-in-the-list")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)

    def calls(code: str, tenant: str) -> float:
        labels = {"method": GET_PROFILE, "code": code, "tenant": tenant}
        return REGISTRY.get_sample_value("voice_gateway_calls_total", labels) or 0.0

    def failures(reason: str) -> float:
        return REGISTRY.get_sample_value("voice_gateway_auth_failures_total", {"reason": reason}) or 0.0

    before = (calls("NOT_FOUND", "ops"), calls("NOT_FOUND", "other"), calls("UNAUTHENTICATED", "none"))
    missing_before = failures("missing")
    request = pb.GetProfileRequest(id="00000000-0000-4000-8000-000000000000")
    for key in (named, unnamed):
        with pytest.raises(aio.AioRpcError):
            await profiles.GetProfile(request, metadata=bearer(key))
    with pytest.raises(aio.AioRpcError):
        await profiles.GetProfile(request)
    after = (calls("NOT_FOUND", "ops"), calls("NOT_FOUND", "other"), calls("UNAUTHENTICATED", "none"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
    assert failures("missing") == missing_before + 1
    sent = REGISTRY.get_sample_value(
        "voice_gateway_forwarded_bytes_total", {"method": GET_PROFILE, "direction": "in"}
    )
    assert sent is not None and sent >= 2 * len(request.SerializeToString())


async def test_the_access_log_names_the_call_but_never_the_key(
    own_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = own_stack
    key = await stack.key("ops")
    profiles = pb_grpc.ProfileServiceStub(stack.channel)
    with caplog.at_level(logging.INFO, logger="voice.access"):
        await profiles.CreateProfile(
            pb.CreateProfileRequest(name="secret words"),
            metadata=(*bearer(key), ("x-request-id", "logged-1")),
        )
    records = [
        r
        for r in caplog.records
        if r.name == "voice.access" and getattr(r, "rpc_method", "").endswith("CreateProfile")
    ]
    assert records, caplog.records
    record = records[-1]
    fields = record.__dict__
    assert fields["code"] == "OK" and fields["key_prefix"] == key[:11]
    assert fields["bytes_in"] > 0 and fields["bytes_out"] > 0 and fields["duration_ms"] >= 0
    everything = " ".join(str(value) for value in fields.values())
    assert key not in everything and key[11:] not in everything
    assert "secret words" not in everything
