"""Forwarding through the gateway to a real profile service: each shape the profile service has, byte for byte
against a direct call; statuses, details, headers and trailers as the service sent them; deadlines, cancellation,
the request id; a backend that is down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from gateway_harness import BackendRecorder, Stack, bearer, trailers
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_pb_grpc
from voice_testing.client_races import server_answer
from voice_testing.media_files import encode_file, speechlike

TENANT = "forwarding"
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def wav() -> bytes:
    return encode_file(speechlike(4.0), 24000, "wav")


@pytest.fixture(scope="module")
async def key(stack: Stack) -> str:
    return await stack.key(TENANT)


def tenant_md(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-voice-tenant", tenant),)


async def upload(profile_id: str, data: bytes) -> AsyncIterator[pb.AddSampleRequest]:
    yield pb.AddSampleRequest(
        metadata=pb.SampleMetadata(
            profile_id=profile_id,
            reference_text="A reference sentence.",
            file_name="me.wav",
            mime_type="audio/wav",
        )
    )
    for start in range(0, len(data), CHUNK):
        yield pb.AddSampleRequest(chunk=data[start : start + CHUNK])


async def new_profile(stack: Stack, key: str) -> str:
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    response = await stub.CreateProfile(
        pb.CreateProfileRequest(name=f"p-{uuid.uuid4().hex[:6]}"), metadata=bearer(key)
    )
    return str(response.profile.id)


async def test_upload_and_download_are_byte_for_byte_what_a_direct_call_gets(
    stack: Stack, key: str, wav: bytes
) -> None:
    through = pb_grpc.ProfileServiceStub(stack.channel)
    direct = pb_grpc.ProfileServiceStub(stack.direct)
    profile_id = await new_profile(stack, key)
    via_gateway = await through.AddSample(upload(profile_id, wav), metadata=bearer(key))
    via_direct = await direct.AddSample(upload(profile_id, wav), metadata=tenant_md(TENANT))
    assert via_gateway.sample.audio_sha256 == via_direct.sample.audio_sha256
    assert via_gateway.sample.original_size_bytes == via_direct.sample.original_size_bytes == len(wav)

    request = pb.GetSampleAudioRequest(
        id=via_gateway.sample.id, format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV)
    )
    # Raw bytes on both paths: the gateway must hand over exactly the service's messages.
    raw_through = stack.channel.unary_stream("/voice.profiles.v1.ProfileService/GetSampleAudio")
    raw_direct = stack.direct.unary_stream("/voice.profiles.v1.ProfileService/GetSampleAudio")
    through_messages = [m async for m in raw_through(request.SerializeToString(), metadata=bearer(key))]
    direct_messages = [m async for m in raw_direct(request.SerializeToString(), metadata=tenant_md(TENANT))]
    assert len(through_messages) > 2 and through_messages == direct_messages


async def test_the_services_status_details_and_trailers_reach_the_client_unchanged(
    stack: Stack, key: str
) -> None:
    request = pb.CreateProfileRequest(name="")  # INVALID_ARGUMENT with a BadRequest field violation
    through = pb_grpc.ProfileServiceStub(stack.channel)
    direct = pb_grpc.ProfileServiceStub(stack.direct)
    with pytest.raises(aio.AioRpcError) as via_gateway:
        await through.CreateProfile(request, metadata=(*bearer(key), ("x-request-id", "same-id-1")))
    with pytest.raises(aio.AioRpcError) as via_direct:
        await direct.CreateProfile(request, metadata=(*tenant_md(TENANT), ("x-request-id", "same-id-1")))
    assert via_gateway.value.code() is via_direct.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert via_gateway.value.details() == via_direct.value.details()
    gateway_trailers = trailers(via_gateway.value)
    direct_trailers = trailers(via_direct.value)
    assert gateway_trailers == direct_trailers
    status = status_pb2.Status.FromString(gateway_trailers["grpc-status-details-bin"])
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in status.details)
    assert [violation.field for violation in bad_request.field_violations] == ["name"]


async def test_the_request_id_is_kept_end_to_end_or_made(
    stack: Stack, key: str, recorder: BackendRecorder
) -> None:
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    call = stub.ListProfiles(
        pb.ListProfilesRequest(), metadata=(*bearer(key), ("x-request-id", "client-chosen-7"))
    )
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "client-chosen-7"
    assert recorder.last("ListProfiles").metadata["x-request-id"] == "client-chosen-7"
    call = stub.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    await call
    made = dict(await call.trailing_metadata())["x-request-id"]
    assert len(made) == 32 and recorder.last("ListProfiles").metadata["x-request-id"] == made


async def test_what_the_backend_receives(stack: Stack, key: str, recorder: BackendRecorder) -> None:
    """The key's tenant (the client's own x-voice-tenant replaced), no client credential, the internal one; the
    client's other metadata as sent."""
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    await stub.ListProfiles(
        pb.ListProfilesRequest(),
        metadata=(*bearer(key), ("x-voice-tenant", "someone-else"), ("x-client-note", "kept")),
    )
    seen = recorder.last("ListProfiles").metadata
    assert seen["x-voice-tenant"] == TENANT
    assert "authorization" not in seen
    assert seen["x-voice-internal-token"]
    assert seen["x-client-note"] == "kept"


async def test_a_deadline_is_passed_on_only_when_the_caller_set_one(
    stack: Stack, key: str, recorder: BackendRecorder
) -> None:
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    await stub.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key))
    assert recorder.last("ListProfiles").time_remaining is None
    await stub.ListProfiles(pb.ListProfilesRequest(), metadata=bearer(key), timeout=7.0)
    remaining = recorder.last("ListProfiles").time_remaining
    # The deadline as the gateway saw it (gRPC rounds it up a little on the wire).
    assert remaining is not None and 5.0 < remaining <= 7.1


async def test_a_client_that_goes_away_cancels_the_backend_call(
    stack: Stack, key: str, wav: bytes, recorder: BackendRecorder
) -> None:
    profile_id = await new_profile(stack, key)
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    long_wav = encode_file(
        speechlike(240.0), 24000, "wav"
    )  # 11 MB to send back: more than every window on the way
    sample = (await stub.AddSample(upload(profile_id, long_wav), metadata=bearer(key))).sample
    # The client reads the header and then stops reading: flow control holds the backend (the gateway reads from
    # it only what it could pass on), until the client cancels.
    call = stub.GetSampleAudio(
        pb.GetSampleAudioRequest(
            id=sample.id, format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV)
        ),
        metadata=bearer(key),
    )
    await call.read()
    backend_call = recorder.last("GetSampleAudio")
    await asyncio.sleep(0.3)
    assert not backend_call.ended.is_set()  # held back by the client that does not read
    cancelled_at = time.monotonic()
    call.cancel()
    await asyncio.wait_for(backend_call.ended.wait(), timeout=5)
    # At once: the backend had minutes of audio left to send (a generous bound for a loaded 2-core machine).
    assert time.monotonic() - cancelled_at < 1.0
    assert not backend_call.completed


async def test_a_bad_upload_through_the_gateway_gets_the_services_precise_code(
    stack: Stack, key: str
) -> None:
    profile_id = await new_profile(stack, key)
    stub = pb_grpc.ProfileServiceStub(stack.channel)
    junk = (
        b"this is not audio" * 20_000
    )  # rejected by the service while the client still sends (grpc/grpc#36066)
    error = await server_answer(lambda: stub.AddSample(upload(profile_id, junk), metadata=bearer(key)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "x-request-id" in trailers(error)
    samples = await stub.ListSamples(pb.ListSamplesRequest(profile_id=profile_id), metadata=bearer(key))
    assert list(samples.samples) == []


async def test_internal_services_are_not_reachable_through_the_gateway(stack: Stack, key: str) -> None:
    ingest = ingest_pb_grpc.GenerationIngestServiceStub(stack.channel)

    async def one() -> AsyncIterator[ingest_pb.CreateGenerationRequest]:
        yield ingest_pb.CreateGenerationRequest(metadata=ingest_pb.GenerationMetadata(text="x"))

    with pytest.raises(aio.AioRpcError) as caught:
        await ingest.CreateGeneration(one(), metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    verify = stack.channel.unary_unary("/voice.auth.v1.KeyVerificationService/VerifyApiKey")
    with pytest.raises(aio.AioRpcError) as caught:
        await verify(b"", metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_a_backend_that_is_down_answers_unavailable_naming_it(stack: Stack, key: str) -> None:
    tts = tts_pb_grpc.TtsServiceStub(stack.channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await tts.GetModelStatus(tts_pb.GetModelStatusRequest(), metadata=bearer(key))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "the tts service is unavailable" in details and "127.0.0.1:1" in details, details
