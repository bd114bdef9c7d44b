"""The TTS gRPC service end to end: a real profile server and a real TTS server (tiny model) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from tools.tiny_model import build_tiny_model
from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as ppb
from voice.profiles.v1 import profiles_service_pb2_grpc as ppb_grpc
from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.audio import AudioEncoding, decode_audio, decode_linear16
from voice_common.audio.encoding import to_s16
from voice_common.audio_messages import encoding_to_proto
from voice_common.config import CommonSettings
from voice_common.errors import Unavailable
from voice_common.server.bootstrap import VoiceServer, build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.settings import ProfilesSettings
from voice_testing.media_files import encode_file, speechlike, wav_data_size, with_wav_data_size
from voice_testing.one_shot_speech import package_greedy_audio, pcm16_steps, whole_decode_audio
from voice_testing.served import Served, served
from voice_testing.status_details import field_violations, trailing_metadata_bytes
from voice_tts.app import TtsApp
from voice_tts.model_manager import ModelSpec, ModelState, check_available
from voice_tts.settings import TtsSettings
from voice_tts.synthesis_types import model_language
from voice_tts.voices import InlineVoice

RATE = 24_000
pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "Hello there, this is a short test."
FRAMES = 30  # max_new_tokens: keeps every request short on the tiny model


async def _serving(server: VoiceServer) -> None:
    for _ in range(100):
        if server.serving:
            return
        await asyncio.sleep(0.05)
    assert server.serving, server.last_readiness_error


@dataclass
class Servers:
    profiles: Any  # ppb_grpc.ProfileServiceStub (untyped generated code)
    tts: Any  # pb_grpc.TtsServiceStub
    app: TtsApp
    tiny_dir: Path
    common: CommonSettings
    profiles_address: str


@dataclass
class TtsServer:
    """One more TTS server (own settings) beside the module's, sharing its profile service."""

    served: Served
    app: TtsApp
    tts: Any  # pb_grpc.TtsServiceStub

    @property
    def server(self) -> VoiceServer:
        return self.served.server

    async def wait_for_health(self, status: int, within_seconds: float = 10.0) -> None:
        await self.served.wait_for_health(status, within_seconds)


@contextlib.asynccontextmanager
async def tts_server(
    servers: Servers, settings: TtsSettings, **open_options: Any
) -> AsyncIterator[TtsServer]:
    app = await TtsApp.open(servers.common, settings, **open_options)
    try:
        async with served(servers.common, app.registration(), app.readiness) as running:
            yield TtsServer(running, app, pb_grpc.TtsServiceStub(running.channel))
    finally:
        await app.close()


def tts_settings(servers: Servers, **kwargs: Any) -> TtsSettings:
    kwargs.setdefault("model", str(servers.tiny_dir))
    return TtsSettings(port=0, metrics_port=0, profiles_address=servers.profiles_address, **kwargs)


@pytest.fixture(scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> AsyncIterator[Servers]:
    common = CommonSettings(data_dir=tmp_path_factory.mktemp("data"), log_format="text")
    profiles_app = await ProfilesApp.open(common, ProfilesSettings(port=0, metrics_port=0), migrate=True)
    profiles_server = build_server(
        settings=common,
        services=profiles_app.registrations(),
        host="127.0.0.1",
        port=0,
        readiness=profiles_app.readiness,
    )
    await profiles_server.start()
    await _serving(profiles_server)
    settings = TtsSettings(
        model=str(tiny_dir),
        port=0,
        metrics_port=0,
        profiles_address=f"127.0.0.1:{profiles_server.port}",
    )
    tts_app = await TtsApp.open(common, settings)
    tts_server = build_server(
        settings=common,
        services=[tts_app.registration()],
        host="127.0.0.1",
        port=0,
        readiness=tts_app.readiness,
    )
    await tts_server.start()
    await _serving(tts_server)
    profiles_channel = aio.insecure_channel(f"127.0.0.1:{profiles_server.port}")
    tts_channel = aio.insecure_channel(f"127.0.0.1:{tts_server.port}")
    yield Servers(
        ppb_grpc.ProfileServiceStub(profiles_channel),
        pb_grpc.TtsServiceStub(tts_channel),
        tts_app,
        tiny_dir,
        common,
        f"127.0.0.1:{profiles_server.port}",
    )
    await tts_channel.close(None)
    await profiles_channel.close(None)
    await tts_server.stop(0)
    await tts_app.close()
    await profiles_server.stop(0)
    await profiles_app.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def meta(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-voice-tenant", tenant),)


def reference_wav(seed: int = 1) -> bytes:
    return encode_file(speechlike(2.5, RATE, seed=seed), RATE, "wav")


def config(**kwargs: Any) -> pb.SynthesisConfig:
    kwargs.setdefault("sampling", pb.SamplingParameters(max_new_tokens=FRAMES))
    if "voice" not in kwargs:
        kwargs["voice"] = pb.Voice(reference=pb.VoiceReference(audio=reference_wav()))
    return pb.SynthesisConfig(**kwargs)


async def voiced_profile(servers: Servers, tenant: str, *, with_sample: bool = True) -> str:
    response = await servers.profiles.CreateProfile(
        ppb.CreateProfileRequest(name="Narrator", language="en"), metadata=meta(tenant)
    )
    profile_id: str = response.profile.id
    if with_sample:
        data = reference_wav(seed=2)
        metadata = ppb.SampleMetadata(
            profile_id=profile_id,
            file_name="sample.wav",
            mime_type="audio/wav",
            reference_text="Hello there.",
        )
        messages = [ppb.AddSampleRequest(metadata=metadata), ppb.AddSampleRequest(chunk=data)]
        await servers.profiles.AddSample(iter(messages), metadata=meta(tenant))
    return profile_id


async def generations(servers: Servers, tenant: str) -> list[ppb.Generation]:
    response = await servers.profiles.ListGenerations(ppb.ListGenerationsRequest(), metadata=meta(tenant))
    return list(response.generations)


async def test_synthesize_from_an_inline_reference(servers: Servers, tenant: str) -> None:
    response = await servers.tts.Synthesize(
        pb.SynthesizeRequest(config=config(seed=5), text=TEXT), metadata=meta(tenant)
    )
    assert response.format.encoding == audio_pb2.AUDIO_ENCODING_LINEAR16
    assert response.format.sample_rate_hertz == RATE
    summary = response.summary
    assert summary.seed == 5 and summary.generation_id == ""
    assert summary.duration_seconds > 0
    assert len(response.audio) == round(summary.duration_seconds * RATE) * 2

    wav = await servers.tts.Synthesize(
        pb.SynthesizeRequest(
            config=config(
                output_format=audio_pb2.AudioFormat(
                    encoding=audio_pb2.AUDIO_ENCODING_WAV, sample_rate_hertz=16000
                )
            ),
            text=TEXT,
        ),
        metadata=meta(tenant),
    )
    assert wav.format.encoding == audio_pb2.AUDIO_ENCODING_WAV and wav.format.sample_rate_hertz == 16000
    decoded = decode_audio(wav.audio, target_rate=16000)
    assert len(decoded.samples) / 16000 == pytest.approx(wav.summary.duration_seconds, abs=0.01)


async def test_stream_from_a_profile_with_store(servers: Servers, tenant: str) -> None:
    profile_id = await voiced_profile(servers, tenant)
    request = pb.SynthesizeStreamRequest(
        config=config(voice=pb.Voice(profile_id=profile_id), seed=11, store=True, language="en"), text=TEXT
    )
    messages = [message async for message in servers.tts.SynthesizeStream(request, metadata=meta(tenant))]
    kinds = [message.WhichOneof("payload") for message in messages]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    assert set(kinds[1:-1]) == {"audio"} and len(kinds) - 2 > 1
    chunks = [message.audio for message in messages[1:-1]]
    offset = 0
    for chunk in chunks:
        assert chunk.offset_bytes == offset
        offset += len(chunk.data)
    summary = messages[-1].summary
    timings = summary.timings
    assert timedelta(0) < timings.time_to_first_audio.ToTimedelta() < timings.total.ToTimedelta()
    assert timings.real_time_factor > 0
    assert summary.seed == 11 and summary.generation_id
    stored = await servers.profiles.GetGeneration(
        ppb.GetGenerationRequest(id=summary.generation_id), metadata=meta(tenant)
    )
    assert stored.generation.profile_id == profile_id and stored.generation.seed == 11
    assert stored.generation.text == TEXT and not stored.generation.HasField("expire_time")
    assert stored.generation.duration_seconds == pytest.approx(summary.duration_seconds, abs=0.01)

    # The same seed again: the same audio.
    request.config.store = False
    again = [message async for message in servers.tts.SynthesizeStream(request, metadata=meta(tenant))]
    assert b"".join(m.audio.data for m in again[1:-1]) == b"".join(chunk.data for chunk in chunks)


async def test_cancelled_stream_stores_nothing(servers: Servers, tenant: str) -> None:
    # About 4 s of work on the tiny model if it ran to the end.
    request = pb.SynthesizeStreamRequest(
        config=config(store=True, sampling=pb.SamplingParameters(max_new_tokens=2000)), text=TEXT * 100
    )
    call = servers.tts.SynthesizeStream(request, metadata=meta(tenant))
    first = await call.read()
    assert first.WhichOneof("payload") == "start"
    second = await call.read()
    assert second.WhichOneof("payload") == "audio"
    call.cancel()
    cancelled_at = time.monotonic()
    for _ in range(250):
        if servers.app.engine.queue_depth == 0:
            break
        await asyncio.sleep(0.02)
    assert servers.app.engine.queue_depth == 0
    assert time.monotonic() - cancelled_at < 1.5  # stopped, not run to the end
    await asyncio.sleep(0.3)
    assert await generations(servers, tenant) == []


async def _code(servers: Servers, tenant: str, request: pb.SynthesizeRequest) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(request, metadata=meta(tenant))
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_bad_requests(servers: Servers, tenant: str) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await _code(servers, tenant, pb.SynthesizeRequest(config=config(store=True), text="  ")) == invalid
    bad_language = config(store=True, language="klingon")
    assert await _code(servers, tenant, pb.SynthesizeRequest(config=bad_language, text=TEXT)) == invalid
    hot = config(store=True, sampling=pb.SamplingParameters(temperature=5))
    assert await _code(servers, tenant, pb.SynthesizeRequest(config=hot, text=TEXT)) == invalid
    bad_audio = config(store=True, voice=pb.Voice(reference=pb.VoiceReference(audio=b"not audio")))
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(pb.SynthesizeRequest(config=bad_audio, text=TEXT), metadata=meta(tenant))
    assert caught.value.code() == invalid and "could not be decoded" in (caught.value.details() or "")
    assert violated_fields(caught.value) == ["config.voice.reference.audio"]
    unknown = config(store=True, voice=pb.Voice(profile_id=str(uuid.uuid4())))
    assert (
        await _code(servers, tenant, pb.SynthesizeRequest(config=unknown, text=TEXT))
        == grpc.StatusCode.NOT_FOUND
    )
    empty_profile = await voiced_profile(servers, tenant, with_sample=False)
    empty = config(store=True, voice=pb.Voice(profile_id=empty_profile))
    code = await _code(servers, tenant, pb.SynthesizeRequest(config=empty, text=TEXT))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert await generations(servers, tenant) == []


def rich_details(error: aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc Status in the error's trailing metadata."""
    trailing: Any = error.trailing_metadata()  # (key, value) pairs; grpc's stubs type them otherwise
    details = [value for key, value in trailing if key == "grpc-status-details-bin"]
    assert details, "no grpc-status-details-bin in the trailing metadata"
    return status_pb2.Status.FromString(details[0])


def violated_fields(error: aio.AioRpcError) -> list[str]:
    fields = []
    for detail in rich_details(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


def _cut_wav() -> bytes:
    whole = encode_file(speechlike(3.0, RATE, seed=3), RATE, "wav")
    return with_wav_data_size(whole, wav_data_size(whole) * 10)


BAD_REFERENCES = {
    "1 s clip": lambda: encode_file(speechlike(1.0, RATE, seed=3), RATE, "wav"),
    "5 s of digital silence": lambda: encode_file(np.zeros(5 * RATE, np.float32), RATE, "wav"),
    "WAV holding a tenth of its declared data": _cut_wav,
}


@pytest.mark.parametrize("case", list(BAD_REFERENCES))
async def test_an_inline_reference_is_held_to_the_sample_rules(
    servers: Servers, tenant: str, case: str
) -> None:
    data = BAD_REFERENCES[case]()
    profile_id = await voiced_profile(servers, tenant, with_sample=False)
    metadata = ppb.SampleMetadata(profile_id=profile_id, file_name="a.wav", reference_text="Hello there.")
    with pytest.raises(aio.AioRpcError) as as_sample:
        await servers.profiles.AddSample(
            iter([ppb.AddSampleRequest(metadata=metadata), ppb.AddSampleRequest(chunk=data)]),
            metadata=meta(tenant),
        )
    inline = config(
        store=True, voice=pb.Voice(reference=pb.VoiceReference(audio=data, transcript="Hello there."))
    )
    with pytest.raises(aio.AioRpcError) as as_reference:
        await servers.tts.Synthesize(pb.SynthesizeRequest(config=inline, text=TEXT), metadata=meta(tenant))
    assert as_sample.value.code() == as_reference.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert as_reference.value.details() == as_sample.value.details()
    assert violated_fields(as_reference.value) == ["config.voice.reference.audio"]
    assert await generations(servers, tenant) == []


async def test_a_quiet_inline_reference_is_used_and_its_warning_logged(
    servers: Servers, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = encode_file(speechlike(3.0, RATE, seed=9, amplitude=0.02), RATE, "wav")
    request = pb.SynthesizeRequest(
        config=config(voice=pb.Voice(reference=pb.VoiceReference(audio=quiet))), text=TEXT
    )
    with caplog.at_level("INFO", logger="voice_tts"):
        response = await servers.tts.Synthesize(request, metadata=meta(tenant))
    assert response.summary.duration_seconds > 0
    assert any("very quiet" in record.getMessage() for record in caplog.records), caplog.text


async def duplex(servers: Servers, tenant: str, messages: list[pb.SynthesizeDuplexRequest]) -> list[Any]:
    async def requests() -> AsyncIterator[pb.SynthesizeDuplexRequest]:
        for message in messages:
            await asyncio.sleep(0.01)
            yield message

    return [message async for message in servers.tts.SynthesizeDuplex(requests(), metadata=meta(tenant))]


async def test_duplex_speaks_text_pieces_as_they_come(servers: Servers, tenant: str) -> None:
    wav = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV, sample_rate_hertz=16000)
    first = pb.SynthesizeDuplexRequest(config=config(seed=3, store=True, output_format=wav))
    words = ["Hello ", "there. ", "This is ", "the second ", "sentence."]
    texts = [pb.SynthesizeDuplexRequest(text=word) for word in words]
    messages = await duplex(servers, tenant, [first, *texts])
    kinds = [message.WhichOneof("payload") for message in messages]
    assert kinds[0] == "start" and kinds[-1] == "summary" and set(kinds[1:-1]) == {"audio"}
    assert messages[0].start.format.encoding == audio_pb2.AUDIO_ENCODING_WAV
    data = b"".join(message.audio.data for message in messages[1:-1])
    summary = messages[-1].summary
    assert summary.seed == 3 and summary.generation_id
    decoded = decode_audio(data, target_rate=16000)
    assert len(decoded.samples) / 16000 == pytest.approx(summary.duration_seconds, abs=0.01)
    stored = await servers.profiles.GetGeneration(
        ppb.GetGenerationRequest(id=summary.generation_id), metadata=meta(tenant)
    )
    assert stored.generation.text == "".join(words) and stored.generation.HasField("expire_time")


async def test_duplex_bad_requests(servers: Servers, tenant: str) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await duplex(servers, tenant, [pb.SynthesizeDuplexRequest(text="Hello.")])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(aio.AioRpcError) as caught:
        await duplex(servers, tenant, [pb.SynthesizeDuplexRequest(config=config(store=True))])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await generations(servers, tenant) == []


async def test_model_control(servers: Servers, tenant: str) -> None:
    await servers.tts.Synthesize(pb.SynthesizeRequest(config=config(), text=TEXT), metadata=meta(tenant))
    status = (await servers.tts.GetModelStatus(pb.GetModelStatusRequest())).status
    assert status.state == pb.MODEL_STATE_READY and status.model == str(servers.tiny_dir)
    assert status.device == "cpu" and status.prompt_cache_entries >= 1 and status.queue_depth == 0

    status = (await servers.tts.UnloadModel(pb.UnloadModelRequest())).status
    assert status.state == pb.MODEL_STATE_NOT_LOADED

    # No model READY: the failed load leaves none (FAILED), and the call answers why (tests run offline: no hub).
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.LoadModel(pb.LoadModelRequest(model="Qwen/No-Such-TTS-Model"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and "TTS_MODEL" in (
        caught.value.details() or ""
    )
    status = (await servers.tts.GetModelStatus(pb.GetModelStatusRequest())).status
    assert status.state == pb.MODEL_STATE_FAILED and "TTS_MODEL" in status.message
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(pb.SynthesizeRequest(config=config(), text=TEXT), metadata=meta(tenant))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    status = (await servers.tts.LoadModel(pb.LoadModelRequest())).status  # back to the configured TTS_MODEL
    assert status.state == pb.MODEL_STATE_READY and status.model == str(servers.tiny_dir)


async def test_readiness_waits_for_a_preload_and_a_failed_model_is_not_serving(
    tmp_path: Path, tiny_dir: Path
) -> None:
    common = CommonSettings(data_dir=tmp_path, log_format="text")
    # The check passes (the directory holds a checkpoint); the load itself fails (no such GPU).
    settings = TtsSettings(model=str(tiny_dir), device="cuda:3", preload=True, port=0, metrics_port=0)
    app = await TtsApp.open(common, settings)
    try:
        with pytest.raises(Unavailable, match="TTS_PRELOAD"):
            await app.readiness()
        await app.preload()
        assert app.models.state is ModelState.FAILED
        with pytest.raises(Unavailable, match="cuda:3"):
            await app.readiness()  # no traffic to a replica whose model failed
        await app.models.load(ModelSpec(model=str(tiny_dir), device="cpu"))
        await app.readiness()  # a LoadModel that works brings it back
    finally:
        await app.close()


async def test_hub_id_missing_from_the_local_cache_is_not_serving_when_downloads_are_off(
    tmp_path: Path,
) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_format="text")
    settings = TtsSettings(
        model="Qwen/Qwen3-TTS-12Hz-0.6B-Base", allow_download=False, port=0, metrics_port=0
    )
    empty_cache = tmp_path / "hub"
    empty_cache.mkdir()
    app = await TtsApp.open(common, settings, check=functools.partial(check_available, cache_dir=empty_cache))
    try:
        assert not app.models.preload_expected  # nothing to download at start
        with pytest.raises(Unavailable) as caught:
            await app.readiness()
        message = caught.value.message
        assert "Qwen/Qwen3-TTS-12Hz-0.6B-Base" in message and "Hugging Face cache" in message
        assert "TTS_ALLOW_DOWNLOAD=false" in message and "`make models`" in message
        assert "TTS_MODEL=models/tiny-qwen3-tts" in message and "make tiny-model" in message
        assert app.models.state is ModelState.NOT_LOADED  # the check loads nothing
    finally:
        await app.close()


async def test_no_model_is_not_serving_until_load_model_brings_one(
    servers: Servers, tenant: str, tmp_path: Path
) -> None:
    settings = tts_settings(servers, model=str(tmp_path / "no-such-model"))
    async with tts_server(servers, settings) as other:
        await other.wait_for_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        reason = other.server.last_readiness_error or ""
        assert "no-such-model" in reason and "TTS_MODEL" in reason and "make tiny-model" in reason
        # The RPCs still answer, and say the same.
        status = (await other.tts.GetModelStatus(pb.GetModelStatusRequest())).status
        assert status.state == pb.MODEL_STATE_NOT_LOADED
        with pytest.raises(aio.AioRpcError) as caught:
            await other.tts.Synthesize(
                pb.SynthesizeRequest(config=config(), text=TEXT), metadata=meta(tenant)
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "TTS_MODEL" in (caught.value.details() or "")
        assert (
            await other.tts.GetModelStatus(pb.GetModelStatusRequest())
        ).status.state == pb.MODEL_STATE_FAILED

        status = (await other.tts.LoadModel(pb.LoadModelRequest(model=str(servers.tiny_dir)))).status
        assert status.state == pb.MODEL_STATE_READY
        await other.wait_for_health(health_pb2.HealthCheckResponse.SERVING)


def sample_value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_synthesis_moves_the_metrics(servers: Servers, tenant: str) -> None:
    names = (
        ("voice_tts_audio_seconds_total", None),
        ("voice_tts_time_to_first_audio_seconds_count", {"rpc": "Synthesize"}),
        ("voice_tts_time_to_first_audio_seconds_count", {"rpc": "SynthesizeStream"}),
        ("voice_tts_real_time_factor_count", None),
        ("voice_tts_batch_size_count", None),
    )
    before = [sample_value(name, labels) for name, labels in names]
    response = await servers.tts.Synthesize(
        pb.SynthesizeRequest(config=config(seed=1), text=TEXT), metadata=meta(tenant)
    )
    audio_seconds, first_audio, stream_first_audio, rtf, batch_steps = (
        sample_value(name, labels) - value for (name, labels), value in zip(names, before, strict=True)
    )
    assert audio_seconds == pytest.approx(response.summary.duration_seconds)
    assert (first_audio, stream_first_audio, rtf) == (1, 0, 1)
    assert sample_value("voice_tts_queue_depth") == 0
    assert batch_steps >= 1  # every frame after the first is a batch step (here a batch of one)


async def test_prompt_cache_misses_then_hits_until_the_samples_change(servers: Servers, tenant: str) -> None:
    response = await servers.profiles.CreateProfile(
        ppb.CreateProfileRequest(name="Cached", language="en"), metadata=meta(tenant)
    )
    profile_id = response.profile.id
    metadata = ppb.SampleMetadata(
        profile_id=profile_id, file_name="a.wav", mime_type="audio/wav", reference_text="Hello there."
    )
    added = await servers.profiles.AddSample(
        iter([ppb.AddSampleRequest(metadata=metadata), ppb.AddSampleRequest(chunk=reference_wav(seed=7))]),
        metadata=meta(tenant),
    )
    results = ("memory_hit", "store_hit", "miss")

    async def lookup() -> dict[str, float]:
        """Synthesize once; which prompt-cache result it counted."""
        before = {r: sample_value("voice_tts_prompt_cache_requests_total", {"result": r}) for r in results}
        request = pb.SynthesizeRequest(
            config=config(voice=pb.Voice(profile_id=profile_id), seed=2), text=TEXT
        )
        await servers.tts.Synthesize(request, metadata=meta(tenant))
        after = {r: sample_value("voice_tts_prompt_cache_requests_total", {"result": r}) for r in results}
        return {r: after[r] - before[r] for r in results if after[r] != before[r]}

    assert await lookup() == {"miss": 1}
    assert await lookup() == {"memory_hit": 1}
    sample = ppb.Sample(id=added.sample.id, reference_text="Hello there, again.")
    await servers.profiles.UpdateSample(
        ppb.UpdateSampleRequest(
            sample=sample, update_mask=field_mask_pb2.FieldMask(paths=["reference_text"])
        ),
        metadata=meta(tenant),
    )
    assert await lookup() == {"miss": 1}  # a new transcript: a new prompt
    assert await lookup() == {"memory_hit": 1}
    more = ppb.SampleMetadata(
        profile_id=profile_id, file_name="b.wav", mime_type="audio/wav", reference_text="And more."
    )
    await servers.profiles.AddSample(
        iter([ppb.AddSampleRequest(metadata=more), ppb.AddSampleRequest(chunk=reference_wav(seed=8))]),
        metadata=meta(tenant),
    )
    assert await lookup() == {"miss": 1}  # another sample: a new prompt


def retry_delay(error: aio.AioRpcError) -> float:
    """The google.rpc RetryInfo delay in the error's trailing metadata."""
    trailing: Any = error.trailing_metadata()  # (key, value) pairs; grpc's stubs type them otherwise
    details = [value for key, value in trailing if key == "grpc-status-details-bin"]
    assert details, "no grpc-status-details-bin in the trailing metadata"
    status = status_pb2.Status.FromString(details[0])
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds() / 1e9)
    raise AssertionError(f"no RetryInfo in {status}")


async def test_a_full_queue_refuses_with_a_retry_hint_and_stores_nothing(
    servers: Servers, tenant: str
) -> None:
    async with tts_server(servers, tts_settings(servers, max_queue=1)) as other:
        await other.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
        # Seconds of work on the tiny model if it ran to the end.
        long = pb.SynthesizeStreamRequest(
            config=config(sampling=pb.SamplingParameters(max_new_tokens=2000)), text=TEXT * 100
        )
        call = other.tts.SynthesizeStream(long, metadata=meta(tenant))
        try:
            assert (await call.read()).WhichOneof("payload") == "start"
            assert (await call.read()).WhichOneof("payload") == "audio"
            assert other.app.engine.queue_depth == 1
            assert sample_value("voice_tts_queue_depth") == 1  # the gauge reads the newest app's synthesizer
            with pytest.raises(aio.AioRpcError) as caught:
                await other.tts.Synthesize(
                    pb.SynthesizeRequest(config=config(store=True), text=TEXT), metadata=meta(tenant)
                )
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert retry_delay(caught.value) >= 1
        finally:
            call.cancel()
        for _ in range(250):
            if other.app.engine.queue_depth == 0:
                break
            await asyncio.sleep(0.02)
        assert other.app.engine.queue_depth == 0
    assert await generations(servers, tenant) == []


# (encoding, output rate, decoded samples allowed short, long): whole streams from the streaming encoder; MP3
# streams carry the encoder delay and padding (no LAME tag), up to three frames more (see voice_common's tests).
ENCODED = [
    (AudioEncoding.LINEAR16, 16000, 1, 1),
    (AudioEncoding.WAV, 48000, 1, 1),
    (AudioEncoding.FLAC, 16000, 1, 1),
    (AudioEncoding.FLAC, 48000, 1, 1),
    (AudioEncoding.OGG_OPUS, 16000, 320, 320),
    (AudioEncoding.OGG_OPUS, 48000, 960, 960),
    (AudioEncoding.MP3, 16000, 576, 3 * 576),
    (AudioEncoding.MP3, 48000, 1152, 3 * 1152),
]


@pytest.mark.parametrize(("encoding", "rate", "shorter", "longer"), ENCODED)
async def test_every_encoding_at_a_resampled_rate_decodes_to_the_duration(
    servers: Servers, tenant: str, encoding: AudioEncoding, rate: int, shorter: int, longer: int
) -> None:
    output = audio_pb2.AudioFormat(encoding=encoding_to_proto(encoding), sample_rate_hertz=rate)
    response = await servers.tts.Synthesize(
        pb.SynthesizeRequest(config=config(seed=4, output_format=output), text=TEXT), metadata=meta(tenant)
    )
    assert response.format.encoding == output.encoding and response.format.sample_rate_hertz == rate
    if encoding is AudioEncoding.LINEAR16:
        decoded = decode_linear16(response.audio, rate, target_rate=rate)
    else:
        decoded = decode_audio(response.audio, target_rate=rate)
    expected = round(response.summary.duration_seconds * rate)
    assert expected - shorter <= len(decoded.samples) <= expected + longer


async def test_a_profile_id_that_is_not_an_id_is_invalid_not_unavailable(
    servers: Servers, tenant: str
) -> None:
    # A 10 000-character profile_id used to reach the profile service, whose answer echoed it past gRPC's metadata
    # limit; TTS then said the profile service was not answering and to retry, which could never work.
    for bad_id in ("x" * 10_000, "../etc"):
        request = pb.SynthesizeRequest(config=config(voice=pb.Voice(profile_id=bad_id)), text=TEXT)
        with pytest.raises(aio.AioRpcError) as caught:
            await servers.tts.Synthesize(request, metadata=meta(tenant))
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        details = error.details() or ""
        assert "is not a profile id" in details and len(details) < 300, details
        assert list(field_violations(error)) == ["config.voice.profile_id"]
        assert trailing_metadata_bytes(error) < 2000


async def test_an_unknown_encoding_is_listed_with_the_other_bad_fields(servers: Servers, tenant: str) -> None:
    bad = config(language="klingon", output_format=audio_pb2.AudioFormat(encoding=99))  # type: ignore[arg-type]
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(pb.SynthesizeRequest(config=bad, text=TEXT), metadata=meta(tenant))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(caught.value)) == ["config.output_format.encoding", "language"]


async def test_a_tenant_header_sent_twice_is_refused(servers: Servers, tenant: str) -> None:
    twice = (("x-voice-tenant", tenant), ("x-voice-tenant", "t-other"))
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(pb.SynthesizeRequest(config=config(), text=TEXT), metadata=twice)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sent 2 times" in (caught.value.details() or "")


# -- speed: the audio time-stretched (voice_tts.time_stretch), the pitch kept -----------------------------------


def _seconds(response: pb.SynthesizeResponse) -> float:
    """The LINEAR16 audio's own length."""
    return len(response.audio) / 2 / response.format.sample_rate_hertz


async def test_speed_2_takes_half_the_time_of_speed_1_and_is_stored_stretched(
    servers: Servers, tenant: str
) -> None:
    async def spoken(**options: Any) -> pb.SynthesizeResponse:
        request = pb.SynthesizeRequest(config=config(seed=21, **options), text=TEXT)
        response: pb.SynthesizeResponse = await servers.tts.Synthesize(request, metadata=meta(tenant))
        return response

    plain, fast, unset = await spoken(), await spoken(speed=2.0, store=True), await spoken(speed=1.0)
    assert unset.audio == plain.audio  # speed 1 bypasses the stretcher: the very same samples as unset
    ratio = _seconds(fast) / _seconds(plain)
    print(f"speed 2 over speed 1, same seed: duration x{ratio:.4f}")
    assert ratio == pytest.approx(0.5, rel=0.05)
    assert fast.summary.duration_seconds == pytest.approx(_seconds(fast), abs=0.01)
    stored = await servers.profiles.GetGeneration(
        ppb.GetGenerationRequest(id=fast.summary.generation_id), metadata=meta(tenant)
    )
    assert stored.generation.duration_seconds == pytest.approx(_seconds(fast), abs=0.01)
    assert stored.generation.parameters["speed"] == 2.0


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [(AudioEncoding.FLAC, 16000), (AudioEncoding.OGG_OPUS, 48000), (AudioEncoding.WAV, 8000)],
)
async def test_a_stretched_stream_encodes_to_its_stretched_duration(
    servers: Servers, tenant: str, encoding: AudioEncoding, rate: int
) -> None:
    output = audio_pb2.AudioFormat(encoding=encoding_to_proto(encoding), sample_rate_hertz=rate)
    plain = await servers.tts.Synthesize(
        pb.SynthesizeRequest(config=config(seed=4), text=TEXT), metadata=meta(tenant)
    )
    request = pb.SynthesizeStreamRequest(config=config(seed=4, output_format=output, speed=0.8), text=TEXT)
    messages = [message async for message in servers.tts.SynthesizeStream(request, metadata=meta(tenant))]
    kinds = [message.WhichOneof("payload") for message in messages]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    # Audio flows while the model works (chunks every 12 frames), not all at the end.
    assert [message.audio.data != b"" for message in messages[1:-1]].count(True) >= 3
    timings = messages[-1].summary.timings
    assert timedelta(0) < timings.time_to_first_audio.ToTimedelta() < timings.total.ToTimedelta()
    decoded = decode_audio(b"".join(message.audio.data for message in messages[1:-1]), target_rate=rate)
    seconds = len(decoded.samples) / rate
    assert seconds == pytest.approx(messages[-1].summary.duration_seconds, abs=0.03)
    assert seconds == pytest.approx(_seconds(plain) / 0.8, rel=0.05)


async def test_a_stretched_stream_sends_its_first_audio_before_the_model_has_finished(
    servers: Servers, tenant: str
) -> None:
    # Long enough (about 4 s of work on the tiny model) that the end is far from the first chunk.
    request = pb.SynthesizeStreamRequest(
        config=config(speed=1.5, sampling=pb.SamplingParameters(max_new_tokens=2000)), text=TEXT * 100
    )
    call = servers.tts.SynthesizeStream(request, metadata=meta(tenant))
    try:
        assert (await call.read()).WhichOneof("payload") == "start"
        first = await call.read()
        assert first.WhichOneof("payload") == "audio" and first.audio.data
        assert (
            servers.app.engine.queue_depth == 1
        )  # the request still runs: this audio came from its first chunk
    finally:
        call.cancel()
    for _ in range(250):
        if servers.app.engine.queue_depth == 0:
            break
        await asyncio.sleep(0.02)
    assert servers.app.engine.queue_depth == 0


async def test_duplex_speaks_at_the_speed_asked(servers: Servers, tenant: str) -> None:
    words = ["Hello ", "there. ", "This is ", "the second ", "sentence."]

    async def seconds(speed: float) -> float:
        first = pb.SynthesizeDuplexRequest(config=config(seed=8, speed=speed))
        messages = await duplex(
            servers, tenant, [first, *(pb.SynthesizeDuplexRequest(text=w) for w in words)]
        )
        data = b"".join(message.audio.data for message in messages[1:-1])
        assert len(data) / 2 / RATE == pytest.approx(messages[-1].summary.duration_seconds, abs=0.01)
        return len(data) / 2 / RATE

    assert await seconds(0.5) / await seconds(1.0) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("speed", [4.5, 0.2, -1.0, float("nan"), float("inf")])
async def test_a_speed_outside_the_range_is_invalid_and_nothing_is_stored(
    servers: Servers, tenant: str, speed: float
) -> None:
    request = pb.SynthesizeRequest(config=config(store=True, speed=speed), text=TEXT)
    with pytest.raises(aio.AioRpcError) as caught:
        await servers.tts.Synthesize(request, metadata=meta(tenant))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from 0.25 to 4.0" in (caught.value.details() or "")
    assert list(field_violations(caught.value)) == ["config.speed"]
    with pytest.raises(aio.AioRpcError) as caught:
        await duplex(servers, tenant, [pb.SynthesizeDuplexRequest(config=config(store=True, speed=speed))])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(caught.value)) == ["config.speed"]
    assert await generations(servers, tenant) == []


# -- streamed audio against the package's one-shot audio (issue 15) -------------------------------------------------

PARITY_TEXT = "Streamed audio, decoded frame by frame, equals the one-shot decode of the same codes."
PARITY_TRANSCRIPT = "Hello there."
PCM16_STEP = 1


@pytest.fixture(scope="module")
def never_eos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model whose talker never picks EOS: greedy generations run to max_new_tokens, so lengths are known."""
    return build_tiny_model(tmp_path_factory.mktemp("never-eos") / "tiny-qwen3-tts", seed=0, never_eos=True)


async def _stream_pcm(stub: Any, tenant: str, synthesis: pb.SynthesisConfig) -> tuple[np.ndarray, int]:
    """A SynthesizeStream's LINEAR16 samples and how many audio messages carried them."""
    request = pb.SynthesizeStreamRequest(config=synthesis, text=PARITY_TEXT)
    chunks = [
        message.audio.data
        async for message in stub.SynthesizeStream(request, metadata=meta(tenant))
        if message.WhichOneof("payload") == "audio"
    ]
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.int32), len(chunks)


def _greedy(wav: bytes, frames: int) -> pb.SynthesisConfig:
    return pb.SynthesisConfig(
        voice=pb.Voice(reference=pb.VoiceReference(audio=wav, transcript=PARITY_TRANSCRIPT)),
        language="en",
        sampling=pb.SamplingParameters(temperature=0, max_new_tokens=frames),
    )


async def test_a_greedy_stream_equals_the_packages_one_shot_audio(
    servers: Servers, tenant: str, never_eos_dir: Path
) -> None:
    """SynthesizeStream (4-frame first chunk, then 12) against qwen_tts's own generate_voice_clone for the same
    reference, text and greedy settings: within one PCM16 step. Past 300 frames (reference included) the package
    decodes in 300-frame pieces with 25 frames of context, so there the stream is held to one whole decode of the
    same codes, which the package's audio is visibly further from."""
    async with tts_server(servers, tts_settings(servers, model=str(never_eos_dir))) as server:
        wav = reference_wav(seed=2)
        short, short_chunks = await _stream_pcm(server.tts, tenant, _greedy(wav, 120))
        long, _ = await _stream_pcm(server.tts, tenant, _greedy(wav, 300))
        model = server.app.models.loaded
        assert model is not None
        # The prompt the service built for this clip (now a memory hit in its cache).
        prompt, _ = await server.app.voices.prompt(
            tenant, InlineVoice(wav, PARITY_TRANSCRIPT), server.app.models.spec, model
        )
    assert prompt.ref_code is not None and short_chunks == 1 + math.ceil((120 - 4) / 12)
    language = model_language("en")
    assert language is not None

    def package(frames: int) -> np.ndarray:
        return package_greedy_audio(model, PARITY_TEXT, language, prompt, frames)

    def whole(frames: int) -> np.ndarray:
        return whole_decode_audio(model, PARITY_TEXT, language, prompt, frames)

    reference_frames = prompt.ref_code.shape[0]
    assert reference_frames + 120 < 300 < reference_frames + 300
    assert short.size == 120 * 1920 and long.size == 300 * 1920
    assert pcm16_steps(await asyncio.to_thread(package, 120), short) <= PCM16_STEP
    whole_long = await asyncio.to_thread(whole, 300)
    assert pcm16_steps(whole_long, long) <= PCM16_STEP
    package_long = await asyncio.to_thread(package, 300)
    assert pcm16_steps(package_long, to_s16(whole_long).astype(np.int32)) > 10 * PCM16_STEP


async def test_max_batch_1_gives_the_same_bytes_however_requests_overlap(
    servers: Servers, tenant: str
) -> None:
    """With TTS_MAX_BATCH=1 requests run one at a time through exactly the solo computation: a seed gives the same
    bytes alone and among concurrent requests (the profile's reference state cached or not)."""
    async with tts_server(servers, tts_settings(servers, max_batch=1)) as server:
        sampled = config(seed=9, language="en")
        alone, _ = await _stream_pcm(server.tts, tenant, sampled)
        together = await asyncio.gather(*(_stream_pcm(server.tts, tenant, sampled) for _ in range(3)))
    assert alone.size > 0
    for audio, _ in together:
        np.testing.assert_array_equal(audio, alone)


async def test_a_warm_voice_never_speaks_with_samples_that_changed_or_a_profile_that_is_gone(
    servers: Servers, tenant: str
) -> None:
    """A profile's warm prompt starts the synthesis while its samples are listed again; the first audio waits for
    that check. Changed samples: the synthesis starts over with the new prompt, unsent. A deleted profile:
    NOT_FOUND, and nothing stored."""
    profile_id = await voiced_profile(servers, tenant)

    async def audio(*, store: bool = False) -> bytes:
        synthesis = config(voice=pb.Voice(profile_id=profile_id), seed=4, language="en", store=store)
        request = pb.SynthesizeStreamRequest(config=synthesis, text=TEXT)
        messages = [message async for message in servers.tts.SynthesizeStream(request, metadata=meta(tenant))]
        return b"".join(
            message.audio.data for message in messages if message.WhichOneof("payload") == "audio"
        )

    first = await audio()  # cold: listed, built
    assert await audio() == first  # warm: the last listing's prompt, confirmed
    more = ppb.SampleMetadata(
        profile_id=profile_id, file_name="b.wav", mime_type="audio/wav", reference_text="More."
    )
    await servers.profiles.AddSample(
        iter([ppb.AddSampleRequest(metadata=more), ppb.AddSampleRequest(chunk=reference_wav(seed=9))]),
        metadata=meta(tenant),
    )
    changed = await audio()  # started on the old prompt; the check brought the new one
    assert changed and changed != first
    assert await audio() == changed
    await servers.profiles.DeleteProfile(ppb.DeleteProfileRequest(id=profile_id), metadata=meta(tenant))
    with pytest.raises(aio.AioRpcError) as gone:
        await audio(store=True)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert await generations(servers, tenant) == []
