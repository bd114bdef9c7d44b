"""ProfileClient against a real profile server (SQLite + filesystem) on loopback, through a real channel."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from grpc import aio
from sqlalchemy import select

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from voice_common.server.bootstrap import VoiceServer, build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.repositories.models import UploadRequestRow
from voice_profiles.settings import ProfilesSettings
from voice_testing.media_files import encode_file, speechlike
from voice_tts import profile_client
from voice_tts.profile_client import ProfileClient

RATE = 24_000
SAMPLE_SECONDS = 2.5


@dataclass
class Server:
    app: ProfilesApp
    server: VoiceServer
    channel: aio.Channel
    stub: Any  # pb_grpc.ProfileServiceStub (untyped generated code)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("profiles")
    common = CommonSettings(data_dir=data_dir, log_format="text")
    app = await ProfilesApp.open(common, ProfilesSettings(port=0, metrics_port=0), migrate=True)
    voice_server = build_server(
        settings=common, services=app.registrations(), host="127.0.0.1", port=0, readiness=app.readiness
    )
    await voice_server.start()
    for _ in range(100):
        if voice_server.serving:
            break
        await asyncio.sleep(0.05)
    assert voice_server.serving, voice_server.last_readiness_error
    channel = aio.insecure_channel(f"127.0.0.1:{voice_server.port}")
    yield Server(app, voice_server, channel, pb_grpc.ProfileServiceStub(channel))
    await channel.close(None)
    await voice_server.stop(0)
    await app.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(server: Server) -> ProfileClient:
    return ProfileClient(server.channel, timeout_seconds=10.0)


def meta(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-voice-tenant", tenant),)


async def new_profile(server: Server, tenant: str, name: str) -> pb.Profile:
    response = await server.stub.CreateProfile(
        pb.CreateProfileRequest(name=name, language="en"), metadata=meta(tenant)
    )
    profile: pb.Profile = response.profile
    return profile


async def add_sample(
    server: Server, tenant: str, profile_id: str, reference_text: str | None, seed: int
) -> pb.Sample:
    data = encode_file(speechlike(SAMPLE_SECONDS, RATE, seed=seed), RATE, "wav")
    metadata = pb.SampleMetadata(profile_id=profile_id, file_name="sample.wav", mime_type="audio/wav")
    if reference_text is not None:
        metadata.reference_text = reference_text
    messages = [pb.AddSampleRequest(metadata=metadata)]
    messages += [pb.AddSampleRequest(chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)]
    response = await server.stub.AddSample(iter(messages), metadata=meta(tenant))
    sample: pb.Sample = response.sample
    return sample


@pytest.fixture
async def voiced(server: Server, tenant: str) -> tuple[pb.Profile, list[pb.Sample]]:
    """A profile of ``tenant`` with two samples: one with a reference text, one without."""
    profile = await new_profile(server, tenant, "Narrator")
    with_text = await add_sample(server, tenant, profile.id, "Hello there, this is a test.", seed=1)
    without_text = await add_sample(server, tenant, profile.id, None, seed=2)
    return profile, [with_text, without_text]


async def test_reference_clips_returns_the_name_and_every_sample(
    client: ProfileClient, tenant: str, voiced: tuple[pb.Profile, list[pb.Sample]]
) -> None:
    profile, samples = voiced
    name, clips = await client.reference_clips(tenant, profile.id)
    assert name == "Narrator"
    assert len(clips) == 2
    by_hash = {clip.sha256: clip for clip in clips}
    assert set(by_hash) == {sample.audio_sha256 for sample in samples}
    for sample in samples:
        clip = by_hash[sample.audio_sha256]
        assert len(clip.sha256) == 64 and int(clip.sha256, 16) >= 0
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
        assert len(clip.audio) / RATE == pytest.approx(SAMPLE_SECONDS, abs=0.05)
        assert float(np.max(np.abs(clip.audio))) > 0.1
    assert by_hash[samples[0].audio_sha256].transcript == "Hello there, this is a test."
    assert by_hash[samples[1].audio_sha256].transcript is None


async def test_reference_clips_pages_through_every_sample(
    client: ProfileClient,
    tenant: str,
    voiced: tuple[pb.Profile, list[pb.Sample]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profile, samples = voiced
    monkeypatch.setattr(profile_client, "LIST_PAGE_SIZE", 1)
    _, clips = await client.reference_clips(tenant, profile.id)
    assert sorted(clip.sha256 for clip in clips) == sorted(sample.audio_sha256 for sample in samples)


async def test_unknown_profile_is_not_found(client: ProfileClient, tenant: str) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as caught:
        await client.reference_clips(tenant, missing)
    assert caught.value.kind == "profile" and caught.value.resource_id == missing
    assert caught.value.message == f"profile {missing!r} not found"
    assert str(caught.value) == caught.value.message


async def test_another_tenants_profile_is_not_found(
    client: ProfileClient, voiced: tuple[pb.Profile, list[pb.Sample]]
) -> None:
    profile, _ = voiced
    with pytest.raises(NotFound) as caught:
        await client.reference_clips(f"t-{uuid.uuid4().hex[:12]}", profile.id)
    assert caught.value.resource_id == profile.id


async def test_profile_without_samples_is_a_failed_precondition(
    server: Server, client: ProfileClient, tenant: str
) -> None:
    profile = await new_profile(server, tenant, "Empty")
    with pytest.raises(
        FailedPrecondition, match="has no samples yet: add a reference recording with AddSample"
    ):
        await client.reference_clips(tenant, profile.id)


async def test_store_generation_is_readable_from_the_history(
    server: Server, client: ProfileClient, tenant: str, voiced: tuple[pb.Profile, list[pb.Sample]]
) -> None:
    profile, _ = voiced
    pcm = speechlike(1.7, RATE, seed=3)
    generation_id = await client.store_generation(
        tenant,
        profile_id=profile.id,
        text="Good morning.",
        language="en",
        seed=1234,
        parameters={"temperature": 0.9, "top_k": 50.0},
        model_id="tiny-qwen3-tts@test",
        pcm=pcm,
        preview=False,
    )
    response = await server.stub.GetGeneration(
        pb.GetGenerationRequest(id=generation_id), metadata=meta(tenant)
    )
    generation = response.generation
    assert generation.id == generation_id
    assert generation.profile_id == profile.id and generation.profile_name == "Narrator"
    assert generation.text == "Good morning." and generation.language == "en" and generation.seed == 1234
    assert dict(generation.parameters) == {"temperature": 0.9, "top_k": 50.0}
    assert generation.model_id == "tiny-qwen3-tts@test"
    assert generation.duration_seconds == pytest.approx(len(pcm) / RATE, abs=0.01)
    assert not generation.HasField("expire_time")


async def test_store_generation_names_its_upload_with_a_request_id(
    server: Server, client: ProfileClient, tenant: str
) -> None:
    """The profile service remembers what the upload's request id created, so a resend cannot store a copy."""
    generation_id = await client.store_generation(
        tenant,
        profile_id=None,
        text="Once only.",
        language="en",
        seed=1,
        parameters={},
        model_id="tiny-qwen3-tts@test",
        pcm=speechlike(1.0, RATE, seed=5),
        preview=False,
    )
    async with server.app.database.transaction() as tx:
        rows = await tx.session.execute(select(UploadRequestRow).where(UploadRequestRow.tenant_id == tenant))
        recorded = rows.scalars().all()
    assert [(row.operation, row.resource_id) for row in recorded] == [("CreateGeneration", generation_id)]


async def test_store_preview_without_a_profile_expires(
    server: Server, client: ProfileClient, tenant: str
) -> None:
    pcm = speechlike(1.0, RATE, seed=4)
    generation_id = await client.store_generation(
        tenant,
        profile_id=None,
        text="Preview.",
        language="en",
        seed=7,
        parameters={},
        model_id="tiny-qwen3-tts@test",
        pcm=pcm,
        preview=True,
    )
    response = await server.stub.GetGeneration(
        pb.GetGenerationRequest(id=generation_id), metadata=meta(tenant)
    )
    assert response.generation.HasField("expire_time")
    assert response.generation.profile_id == ""


async def test_store_generation_for_an_unknown_profile_is_not_found(
    client: ProfileClient, tenant: str
) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFound) as caught:
        await client.store_generation(
            tenant,
            profile_id=missing,
            text="Hi.",
            language="en",
            seed=1,
            parameters={},
            model_id="m",
            pcm=speechlike(0.5, RATE),
            preview=False,
        )
    assert caught.value.resource_id == missing


async def test_rejected_upload_is_invalid_argument(client: ProfileClient, tenant: str) -> None:
    with pytest.raises(InvalidArgument):
        await client.store_generation(
            tenant,
            profile_id=None,
            text="Nothing said.",
            language="en",
            seed=1,
            parameters={},
            model_id="m",
            pcm=np.zeros(0, dtype=np.float32),
            preview=True,
        )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_profile_service_is_unavailable_quickly(tenant: str) -> None:
    channel = aio.insecure_channel(f"127.0.0.1:{unused_port()}")
    try:
        client = ProfileClient(channel, timeout_seconds=0.5)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="the profile service is not answering"):
            await client.reference_clips(tenant, str(uuid.uuid4()))
        assert time.monotonic() - started < 5.0
    finally:
        await channel.close(None)


async def test_closed_channel_is_unavailable(tenant: str) -> None:
    channel = aio.insecure_channel(f"127.0.0.1:{unused_port()}")
    await channel.close(None)
    client = ProfileClient(channel, timeout_seconds=0.5)
    with pytest.raises(Unavailable, match="the profile service is not answering"):
        await client.reference_clips(tenant, str(uuid.uuid4()))


async def test_sample_downloads_are_bounded(
    server: Server, tenant: str, voiced: tuple[pb.Profile, list[pb.Sample]]
) -> None:
    profile, _ = voiced
    await add_sample(server, tenant, profile.id, "A third one.", seed=5)
    client = ProfileClient(server.channel, max_concurrent_downloads=2)
    real = client._stub.GetSampleAudio
    in_flight = peak = 0

    async def counted(*args: Any, **kwargs: Any) -> AsyncIterator[pb.GetSampleAudioResponse]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.05)  # overlap the downloads if nothing holds them back
            async for message in real(*args, **kwargs):
                yield message
        finally:
            in_flight -= 1

    class CountedCall:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._messages = counted(*args, **kwargs)

        def __aiter__(self) -> AsyncIterator[pb.GetSampleAudioResponse]:
            return self._messages

        def cancel(self) -> bool:
            return False

    client._stub.GetSampleAudio = CountedCall
    _, clips = await client.reference_clips(tenant, profile.id)
    assert len(clips) == 3
    assert peak == 2
