"""The internal GenerationIngestService beside the public ProfileService, through a real server.

Storing a generation is for services only (TTS), so it lives in a service of its own that the gateway does not
expose: the public ProfileService must no longer answer CreateGeneration, and reflection and health must show both.
"""

from __future__ import annotations

from typing import Any

import grpc
from field_helpers import new_profile
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from profiles_harness import Harness, expect_error, tenant_metadata

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_common.audio.encoding import to_s16
from voice_profiles.app import INGEST_SERVICE_NAME, SERVICE_NAME
from voice_testing.media_files import speechlike

OLD_PUBLIC_PATH = "/voice.profiles.v1.ProfileService/CreateGeneration"


def _requests(profile_id: str, data: bytes) -> list[ingest_pb.CreateGenerationRequest]:
    metadata = ingest_pb.GenerationMetadata(
        profile_id=profile_id,
        text="Good morning.",
        language="en",
        format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=24000),
    )
    return [
        ingest_pb.CreateGenerationRequest(metadata=metadata),
        ingest_pb.CreateGenerationRequest(chunk=data),
    ]


async def _reflect(harness: Harness, request: reflection_pb2.ServerReflectionRequest) -> Any:
    """One reflection answer; the stream ends after it, as the request stream is half-closed after one message."""
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    (response,) = [response async for response in stub.ServerReflectionInfo(iter([request]))]
    assert not response.HasField("error_response"), response.error_response
    return response


async def _reflected_files(harness: Harness, symbol: str) -> list[descriptor_pb2.FileDescriptorProto]:
    response = await _reflect(harness, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]


def _methods(files: list[descriptor_pb2.FileDescriptorProto], service_name: str) -> set[str]:
    return {
        method.name
        for f in files
        for service in f.service
        if service.name == service_name
        for method in service.method
    }


async def test_the_public_service_no_longer_stores_generations(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant, name="Speaker")
    data = to_s16(speechlike(0.5, 24000)).tobytes()
    old_call = harness.channel.stream_unary(
        OLD_PUBLIC_PATH,
        request_serializer=ingest_pb.CreateGenerationRequest.SerializeToString,
        response_deserializer=ingest_pb.CreateGenerationResponse.FromString,
    )
    await expect_error(
        lambda: old_call(iter(_requests(profile.id, data)), metadata=tenant_metadata(tenant)),
        grpc.StatusCode.UNIMPLEMENTED,
    )
    assert (await harness.rows(tenant))["generations"] == 0

    # The same request through the internal service stores it, and the public service reads it back.
    stored = await harness.ingest.CreateGeneration(
        iter(_requests(profile.id, data)), metadata=tenant_metadata(tenant)
    )
    got = await harness.stub.GetGeneration(
        pb.GetGenerationRequest(id=stored.generation.id), metadata=tenant_metadata(tenant)
    )
    assert got.generation.profile_id == profile.id
    assert abs(got.generation.duration_seconds - 0.5) < 0.01


async def test_reflection_and_health_show_both_services(harness: Harness) -> None:
    assert INGEST_SERVICE_NAME == "voice.profiles.v1.GenerationIngestService"
    response = await _reflect(harness, reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = {service.name for service in response.list_services_response.service}
    assert {SERVICE_NAME, INGEST_SERVICE_NAME} <= listed

    public = _methods(await _reflected_files(harness, SERVICE_NAME), "ProfileService")
    assert {"GetGeneration", "ListGenerations", "DeleteGeneration"} <= public
    assert "CreateGeneration" not in public
    internal = _methods(await _reflected_files(harness, INGEST_SERVICE_NAME), "GenerationIngestService")
    assert internal == {"CreateGeneration"}

    # Its own health status, mirroring the profile service's readiness (the same check serves both).
    health = health_pb2_grpc.HealthStub(harness.channel)
    for name in ("", SERVICE_NAME, INGEST_SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
