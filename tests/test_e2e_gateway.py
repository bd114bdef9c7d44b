"""End to end: the gateway in front of the real profile, TTS (the tiny model) and ASR (tiny.en) processes, with the
internal credential between them, exactly as ``make run`` starts them.

Keys, scopes and tenants as a client meets them; every call shape forwarded byte for byte (compared with the same
call made straight to the service with the internal token); cancellation reaching TTS; a slow reader leaving the
gateway's memory flat; a backend restarted under traffic; the README's grpcurl requests; ``make run`` itself.

The processes start once for the module (TTS and ASR take a while to import and load); the restart test comes last
because it replaces the profile process.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shlex
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from e2e_support import (
    SERVING,
    ServiceProcess,
    admin,
    bearer,
    create_key,
    explain,
    internal_metadata,
    service,
    service_env,
    start_gateway,
    stop,
    with_internal_token,
)
from google.protobuf import descriptor_pool, field_mask_pb2, json_format, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tools.tiny_model import build_tiny_model
from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.asr.v1 import asr_service_pb2_grpc as asr_grpc
from voice.audio.v1 import audio_pb2
from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.auth.v1 import api_key_service_pb2_grpc as keys_grpc
from voice.auth.v1 import key_verification_service_pb2 as verify_pb
from voice.auth.v1 import key_verification_service_pb2_grpc as verify_grpc
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.audio import decode_audio
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow
# Importing torch, qwen_tts and CTranslate2 and loading both models takes a while on a small machine.
START_SECONDS = 180.0
NOT_FOUND = grpc.StatusCode.NOT_FOUND
README = Path(__file__).resolve().parents[1] / "README.md"
TTS_SERVICE = "voice.tts.v1.TtsService"
ASR_SERVICE = "voice.asr.v1.AsrService"
PROFILE_SERVICE = "voice.profiles.v1.ProfileService"
LINEAR16_48K = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=48000)


@dataclass
class Platform:
    env: dict[str, str]
    log_dir: Path
    profiles: ServiceProcess
    tts: ServiceProcess
    asr: ServiceProcess
    gateway: ServiceProcess
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> a key with every scope

    def direct(self, tenant: str) -> tuple[tuple[str, str], ...]:
        """Metadata of a call straight to a service, as the gateway makes it: the internal token and a tenant."""
        return (*internal_metadata(self.env), ("x-voice-tenant", tenant))

    def as_tenant(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return bearer(self.keys[tenant])

    @property
    def profiles_stub(self) -> pb_grpc.ProfileServiceStub:
        return pb_grpc.ProfileServiceStub(self.gateway.channel)

    @property
    def tts_stub(self) -> tts_grpc.TtsServiceStub:
        return tts_grpc.TtsServiceStub(self.gateway.channel)

    @property
    def asr_stub(self) -> asr_grpc.AsrServiceStub:
        return asr_grpc.AsrServiceStub(self.gateway.channel)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("gateway-e2e")
    # A talker that never chooses EOS: every piece of text runs to max_new_tokens frames, so a request's length is
    # whatever the test asks for (a few frames, or minutes of audio for the streams that must outlast a test).
    tiny = build_tiny_model(root / "tiny-qwen3-tts", seed=0, never_eos=True)
    env = with_internal_token(
        service_env(
            root / "data",
            TTS_MODEL=str(tiny),
            TTS_PRELOAD="true",
            ASR_PRELOAD="true",
            ASR_CPU_THREADS="1",
            HF_HUB_CACHE=str(root / "hub"),
            OMP_NUM_THREADS="1",
            # Short, so a revoked or expired key is refused within the test's patience.
            GATEWAY_KEY_CACHE_SECONDS="0.5",
        )
    )
    log_dir = root / "logs"
    with contextlib.ExitStack() as stack:
        first_profiles = ServiceProcess(env, log_dir)
        started: list[Platform] = []
        # The restart test replaces the profile process: close whichever is current at the end.
        stack.callback(lambda: (started[0].profiles if started else first_profiles).close())
        tts = stack.enter_context(service(env, log_dir, module="voice_tts", prefix="TTS"))
        asr = stack.enter_context(service(env, log_dir, module="voice_asr", prefix="ASR"))
        first_profiles.wait_for(SERVING, timeout=60)
        gateway = stack.enter_context(contextlib.closing(start_gateway(env, log_dir)))
        started.append(Platform(env, log_dir, first_profiles, tts, asr, gateway))
        tts.wait_for(SERVING, timeout=START_SECONDS, service=TTS_SERVICE)
        asr.wait_for(SERVING, timeout=START_SECONDS, service=ASR_SERVICE)
        for name in (PROFILE_SERVICE, TTS_SERVICE, ASR_SERVICE):
            gateway.wait_for(SERVING, timeout=30, service=name)  # the gateway mirrors each backend's health
        started[0].keys = {tenant: create_key(env, tenant) for tenant in ("a", "b")}
        yield started[0]


@dataclass
class TenantData:
    profile: pb.Profile
    sample: pb.Sample
    generation: pb.Generation
    wav: bytes


def add_sample(
    stub: pb_grpc.ProfileServiceStub, metadata: Any, profile_id: str, wav: bytes, text: str
) -> pb.Sample:
    def requests() -> Iterator[pb.AddSampleRequest]:
        yield pb.AddSampleRequest(
            metadata=pb.SampleMetadata(
                profile_id=profile_id, file_name="voice.wav", mime_type="audio/wav", reference_text=text
            )
        )
        for start in range(0, len(wav), 16 * 1024):
            yield pb.AddSampleRequest(chunk=wav[start : start + 16 * 1024])

    response: pb.AddSampleResponse = stub.AddSample(requests(), metadata=metadata, timeout=60)
    return response.sample


def synthesis_config(profile_id: str, frames: int, **fields: Any) -> tts_pb.SynthesisConfig:
    return tts_pb.SynthesisConfig(
        voice=tts_pb.Voice(profile_id=profile_id),
        language="en",
        seed=7,
        sampling=tts_pb.SamplingParameters(max_new_tokens=frames),
        **fields,
    )


@pytest.fixture(scope="module")
def tenant_b(platform: Platform) -> TenantData:
    """Tenant B's profile, sample and generation, made through the gateway with B's key."""
    stub, metadata = platform.profiles_stub, platform.as_tenant("b")
    profile = stub.CreateProfile(
        pb.CreateProfileRequest(name="B's voice", language="en"), metadata=metadata
    ).profile
    wav = speech_wav(SENTENCES[0], "slt")
    sample = add_sample(stub, metadata, profile.id, wav, SENTENCES[0])
    synthesis = platform.tts_stub.Synthesize(
        tts_pb.SynthesizeRequest(
            config=synthesis_config(profile.id, 12, store=True), text="Kept in B's history."
        ),
        metadata=metadata,
        timeout=120,
    )
    generation_id = synthesis.summary.generation_id
    assert generation_id
    generation = stub.GetGeneration(pb.GetGenerationRequest(id=generation_id), metadata=metadata).generation
    return TenantData(profile, sample, generation, wav)


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code ``call`` fails with (a streaming response is read to its end)."""
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as error:
        return error.code()
    raise AssertionError("the call succeeded")


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")


# -- keys and scopes ------------------------------------------------------------------------------------------------


def test_calls_without_a_working_key_or_with_the_wrong_scope_are_refused(platform: Platform) -> None:
    listing = pb.ListProfilesRequest()
    stub = platform.profiles_stub

    def list_with(metadata: Any) -> grpc.RpcError:
        return error_of(lambda: stub.ListProfiles(listing, metadata=metadata, timeout=10))

    missing = list_with(())
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in (missing.details() or "")
    wrong = list_with(bearer("vk_aaaaaaaa_" + "A" * 43))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert list_with((("authorization", "Basic dXNlcg=="),)).code() == grpc.StatusCode.UNAUTHENTICATED
    # Health answers without a key (probes send none).
    assert platform.gateway.health_status() == SERVING

    key = create_key(platform.env, "a", "profiles:read")
    stub.ListProfiles(listing, metadata=bearer(key), timeout=10)
    denied = error_of(
        lambda: stub.CreateProfile(pb.CreateProfileRequest(name="No"), metadata=bearer(key), timeout=10)
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "profiles:write" in (denied.details() or "")
    for call in (
        lambda: platform.tts_stub.GetModelStatus(tts_pb.GetModelStatusRequest(), metadata=bearer(key)),
        lambda: platform.asr_stub.GetModelStatus(asr_pb.GetModelStatusRequest(), metadata=bearer(key)),
        lambda: keys_grpc.ApiKeyServiceStub(platform.gateway.channel).ListApiKeys(
            keys_pb.ListApiKeysRequest(), metadata=bearer(key)
        ),
    ):
        assert code_of(call) == grpc.StatusCode.PERMISSION_DENIED
    tts_only = create_key(platform.env, "a", "tts")
    platform.tts_stub.GetModelStatus(tts_pb.GetModelStatusRequest(), metadata=bearer(tts_only), timeout=10)
    # Model control needs admin, even with the tts scope.
    assert (
        code_of(lambda: platform.tts_stub.UnloadModel(tts_pb.UnloadModelRequest(), metadata=bearer(tts_only)))
        == grpc.StatusCode.PERMISSION_DENIED
    )

    revoked = admin(platform.env, "keys", "revoke", key[:11])
    assert revoked.returncode == 0, explain(revoked)
    time.sleep(0.8)  # past GATEWAY_KEY_CACHE_SECONDS (0.5 s)
    assert list_with(bearer(key)).code() == grpc.StatusCode.UNAUTHENTICATED

    expiring = create_key(platform.env, "a", "profiles:read", ttl_days=3 / 86400)  # three seconds
    stub.ListProfiles(listing, metadata=bearer(expiring), timeout=10)
    time.sleep(3.6)
    expired = list_with(bearer(expiring))
    assert expired.code() == grpc.StatusCode.UNAUTHENTICATED and "expired" in (expired.details() or ""), (
        expired
    )


# -- tenants --------------------------------------------------------------------------------------------------------


def test_a_tenant_cannot_reach_another_tenants_profiles_samples_or_generations(
    platform: Platform, tenant_b: TenantData
) -> None:
    stub, tts, asr = platform.profiles_stub, platform.tts_stub, platform.asr_stub
    a, b = platform.as_tenant("a"), platform.as_tenant("b")
    profile_id, sample_id, generation_id = tenant_b.profile.id, tenant_b.sample.id, tenant_b.generation.id

    def snapshot() -> list[bytes]:
        """Everything B has, as B sees it."""
        return [
            stub.GetProfile(pb.GetProfileRequest(id=profile_id), metadata=b).SerializeToString(),
            stub.ListSamples(pb.ListSamplesRequest(profile_id=profile_id), metadata=b).SerializeToString(),
            stub.GetGeneration(pb.GetGenerationRequest(id=generation_id), metadata=b).SerializeToString(),
            b"".join(
                chunk.SerializeToString()
                for chunk in stub.GetSampleAudio(
                    pb.GetSampleAudioRequest(id=sample_id, original=True), metadata=b
                )
            ),
        ]

    before = snapshot()
    renamed = pb.UpdateProfileRequest(
        profile=pb.Profile(id=profile_id, name="Taken"), update_mask=field_mask_pb2.FieldMask(paths=["name"])
    )
    attempts: dict[str, Callable[[], Any]] = {
        "GetProfile": lambda: stub.GetProfile(pb.GetProfileRequest(id=profile_id), metadata=a),
        "UpdateProfile": lambda: stub.UpdateProfile(renamed, metadata=a),
        "DeleteProfile": lambda: stub.DeleteProfile(pb.DeleteProfileRequest(id=profile_id), metadata=a),
        "ListSamples": lambda: stub.ListSamples(pb.ListSamplesRequest(profile_id=profile_id), metadata=a),
        "GetSampleAudio": lambda: stub.GetSampleAudio(pb.GetSampleAudioRequest(id=sample_id), metadata=a),
        "DeleteSample": lambda: stub.DeleteSample(pb.DeleteSampleRequest(id=sample_id), metadata=a),
        "AddSample": lambda: add_sample(stub, a, profile_id, tenant_b.wav, "Into B's profile."),
        "ExportProfile": lambda: stub.ExportProfile(pb.ExportProfileRequest(id=profile_id), metadata=a),
        "GetGeneration": lambda: stub.GetGeneration(pb.GetGenerationRequest(id=generation_id), metadata=a),
        "GetGenerationAudio": lambda: stub.GetGenerationAudio(
            pb.GetGenerationAudioRequest(id=generation_id), metadata=a
        ),
        "DeleteGeneration": lambda: stub.DeleteGeneration(
            pb.DeleteGenerationRequest(id=generation_id), metadata=a
        ),
        "Synthesize": lambda: tts.Synthesize(
            tts_pb.SynthesizeRequest(config=synthesis_config(profile_id, 4), text="Not my voice."), metadata=a
        ),
        "SynthesizeStream": lambda: tts.SynthesizeStream(
            tts_pb.SynthesizeStreamRequest(config=synthesis_config(profile_id, 4), text="Not my voice."),
            metadata=a,
        ),
        "Transcribe sample": lambda: asr.Transcribe(
            asr_pb.TranscribeRequest(sample_id=sample_id), metadata=a
        ),
        "Transcribe generation": lambda: asr.Transcribe(
            asr_pb.TranscribeRequest(generation_id=generation_id), metadata=a
        ),
    }
    codes = {name: code_of(call) for name, call in attempts.items()}
    assert codes == dict.fromkeys(attempts, NOT_FOUND)
    # A's lists do not show B's things.
    assert profile_id not in [p.id for p in stub.ListProfiles(pb.ListProfilesRequest(), metadata=a).profiles]
    assert generation_id not in [
        g.id for g in stub.ListGenerations(pb.ListGenerationsRequest(), metadata=a).generations
    ]

    # A spoofed x-voice-tenant is replaced by the key's tenant: A naming B still acts as A.
    spoofed = (*a, ("x-voice-tenant", "b"))
    assert (
        code_of(lambda: stub.GetProfile(pb.GetProfileRequest(id=profile_id), metadata=spoofed)) == NOT_FOUND
    )
    made = stub.CreateProfile(pb.CreateProfileRequest(name="Spoofed"), metadata=spoofed).profile
    stub.GetProfile(pb.GetProfileRequest(id=made.id), metadata=a)  # A's
    assert code_of(lambda: stub.GetProfile(pb.GetProfileRequest(id=made.id), metadata=b)) == NOT_FOUND

    assert snapshot() == before  # nothing of B's changed


# -- the internal credential ----------------------------------------------------------------------------------------


def test_every_service_refuses_a_direct_call_without_the_internal_token(platform: Platform) -> None:
    tenant = (("x-voice-tenant", "a"),)
    calls: dict[str, Callable[[Any], Any]] = {
        "ProfileService": lambda metadata: pb_grpc.ProfileServiceStub(platform.profiles.channel).ListProfiles(
            pb.ListProfilesRequest(), metadata=metadata, timeout=10
        ),
        "ApiKeyService": lambda metadata: keys_grpc.ApiKeyServiceStub(platform.profiles.channel).ListApiKeys(
            keys_pb.ListApiKeysRequest(), metadata=metadata, timeout=10
        ),
        "GenerationIngestService": lambda metadata: ingest_grpc.GenerationIngestServiceStub(
            platform.profiles.channel
        ).CreateGeneration(iter([ingest_pb.CreateGenerationRequest()]), metadata=metadata, timeout=10),
        "KeyVerificationService": lambda metadata: verify_grpc.KeyVerificationServiceStub(
            platform.profiles.channel
        ).VerifyApiKey(verify_pb.VerifyApiKeyRequest(key_sha256="0" * 64), metadata=metadata, timeout=10),
        "TtsService": lambda metadata: tts_grpc.TtsServiceStub(platform.tts.channel).GetModelStatus(
            tts_pb.GetModelStatusRequest(), metadata=metadata, timeout=10
        ),
        "AsrService": lambda metadata: asr_grpc.AsrServiceStub(platform.asr.channel).GetModelStatus(
            asr_pb.GetModelStatusRequest(), metadata=metadata, timeout=10
        ),
    }
    wrong_token = (("x-voice-internal-token", "not-the-token"), *tenant)
    for name, call in calls.items():
        assert code_of(functools.partial(call, tenant)) == grpc.StatusCode.UNAUTHENTICATED, name
        assert code_of(functools.partial(call, wrong_token)) == grpc.StatusCode.UNAUTHENTICATED, name
        # An API key is no internal credential either: only the gateway turns keys into calls.
        assert code_of(functools.partial(call, platform.as_tenant("a"))) == grpc.StatusCode.UNAUTHENTICATED, (
            name
        )
    # With the token the same calls get past the credential check (to an answer, or to the request's own error).
    with_token = platform.direct("a")
    calls["ProfileService"](with_token)
    calls["TtsService"](with_token)
    calls["AsrService"](with_token)
    assert (
        code_of(lambda: calls["KeyVerificationService"](with_token)) == grpc.StatusCode.UNAUTHENTICATED
    )  # no key
    assert code_of(lambda: calls["GenerationIngestService"](with_token)) == grpc.StatusCode.INVALID_ARGUMENT


# -- forwarding -----------------------------------------------------------------------------------------------------


def serialized(messages: Iterable[Message]) -> list[bytes]:
    return [message.SerializeToString() for message in messages]


def audio_and_summary(responses: Iterable[Any]) -> tuple[list[bytes], tuple[int, float, str]]:
    """A synthesis's start and audio messages as bytes, and its summary's deterministic part (timings vary)."""
    messages, summary = [], None
    for response in responses:
        if response.WhichOneof("payload") == "summary":
            summary = response.summary
        else:
            messages.append(response.SerializeToString())
    assert summary is not None
    return messages, (summary.seed, summary.duration_seconds, summary.generation_id)


def test_every_call_shape_is_forwarded_byte_for_byte(platform: Platform, tenant_b: TenantData) -> None:
    via, direct = platform.as_tenant("b"), platform.direct("b")
    gateway_profiles, gateway_tts, gateway_asr = platform.profiles_stub, platform.tts_stub, platform.asr_stub
    profiles = pb_grpc.ProfileServiceStub(platform.profiles.channel)
    tts = tts_grpc.TtsServiceStub(platform.tts.channel)
    asr = asr_grpc.AsrServiceStub(platform.asr.channel)
    profile_id = tenant_b.profile.id

    # Upload (client stream): the same file through the gateway and straight in store the same audio.
    wav = speech_wav(SENTENCES[1], "slt")
    through = add_sample(gateway_profiles, via, profile_id, wav, "Uploaded through the gateway.")
    straight = add_sample(profiles, direct, profile_id, wav, "Uploaded through the gateway.")
    for sample in (through, straight):
        sample.ClearField("id")
        sample.ClearField("create_time")
        sample.ClearField("update_time")
    assert through.SerializeToString() == straight.SerializeToString()

    # Download (server stream), as uploaded and converted.
    for request in (
        pb.GetSampleAudioRequest(id=tenant_b.sample.id, original=True),
        pb.GetSampleAudioRequest(
            id=tenant_b.sample.id,
            format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_FLAC, sample_rate_hertz=16000),
        ),
    ):
        forwarded = serialized(gateway_profiles.GetSampleAudio(request, metadata=via, timeout=60))
        assert forwarded == serialized(profiles.GetSampleAudio(request, metadata=direct, timeout=60))
        assert len(forwarded) > 2
    original = list(
        gateway_profiles.GetSampleAudio(
            pb.GetSampleAudioRequest(id=tenant_b.sample.id, original=True), metadata=via
        )
    )
    assert b"".join(m.chunk.data for m in original[1:]) == tenant_b.wav

    # Unary and server-streaming synthesis with a fixed seed.
    unary = tts_pb.SynthesizeRequest(config=synthesis_config(profile_id, 20), text="The same words, twice.")
    forwarded_unary = gateway_tts.Synthesize(unary, metadata=via, timeout=120)
    direct_unary = tts.Synthesize(unary, metadata=direct, timeout=120)
    assert forwarded_unary.audio and forwarded_unary.audio == direct_unary.audio
    assert forwarded_unary.format == direct_unary.format
    streamed = tts_pb.SynthesizeStreamRequest(
        config=synthesis_config(profile_id, 30, output_format=LINEAR16_48K), text="A stream of frames."
    )
    forwarded_stream = audio_and_summary(gateway_tts.SynthesizeStream(streamed, metadata=via, timeout=120))
    assert forwarded_stream == audio_and_summary(tts.SynthesizeStream(streamed, metadata=direct, timeout=120))
    assert len(forwarded_stream[0]) > 2

    # Duplex: text in pieces, audio back.
    def duplex_requests() -> Iterator[tts_pb.SynthesizeDuplexRequest]:
        yield tts_pb.SynthesizeDuplexRequest(config=synthesis_config(profile_id, 16))
        for piece in ("Hello there. ", "Piece by piece. ", "Goodbye."):
            yield tts_pb.SynthesizeDuplexRequest(text=piece)

    forwarded_duplex = audio_and_summary(
        gateway_tts.SynthesizeDuplex(duplex_requests(), metadata=via, timeout=120)
    )
    assert forwarded_duplex == audio_and_summary(
        tts.SynthesizeDuplex(duplex_requests(), metadata=direct, timeout=120)
    )
    assert len(forwarded_duplex[0]) > 2

    # Live ASR (duplex): the final results and the summary are equal (interim ones depend on arrival timing).
    pcm = (
        (np.clip(decode_audio(speech_wav(SENTENCES[0], "slt"), target_rate=16000).samples, -1, 1) * 32767)
        .astype("<i2")
        .tobytes()
    )

    def live_requests() -> Iterator[asr_pb.StreamingTranscribeRequest]:
        yield asr_pb.StreamingTranscribeRequest(
            config=asr_pb.StreamingConfig(
                format=audio_pb2.AudioFormat(
                    encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channels=1
                ),
                interim_results=True,
            )
        )
        for start in range(0, len(pcm), 3200):
            yield asr_pb.StreamingTranscribeRequest(audio=pcm[start : start + 3200])

    def finals(responses: Iterable[asr_pb.StreamingTranscribeResponse]) -> list[bytes]:
        return [
            response.SerializeToString()
            for response in responses
            if response.WhichOneof("payload") == "summary" or response.result.is_final
        ]

    forwarded_live = finals(gateway_asr.StreamingTranscribe(live_requests(), metadata=via, timeout=120))
    assert forwarded_live == finals(asr.StreamingTranscribe(live_requests(), metadata=direct, timeout=120))
    summary = asr_pb.StreamingTranscribeResponse.FromString(forwarded_live[-1]).summary
    assert "fox" in summary.text.lower(), summary

    # A bad upload mid-stream keeps its precise code through the gateway (grpc/grpc#36066 would make it INTERNAL).
    bad = error_of(
        lambda: add_sample(gateway_profiles, via, profile_id, b"RIFF\x00\x00\x00\x00WAVEjunk" * 500, "Junk.")
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


# -- cancellation and flow control ----------------------------------------------------------------------------------


def queue_depth(tts: ServiceProcess) -> float:
    match = re.search(r"^voice_tts_queue_depth (\S+)$", tts.metrics(), re.MULTILINE)
    assert match, "voice_tts_queue_depth is missing from the TTS metrics"
    return float(match.group(1))


def wait_for_queue_depth(tts: ServiceProcess, depth: float, timeout: float) -> float:
    """Seconds until TTS reports ``depth`` requests admitted and unfinished."""
    started = time.monotonic()
    while queue_depth(tts) != depth:
        assert time.monotonic() - started < timeout, f"TTS queue depth is {queue_depth(tts)}, not {depth}"
        time.sleep(0.05)
    return time.monotonic() - started


def long_request(profile_id: str, pieces: int = 8) -> tts_pb.SynthesizeStreamRequest:
    """Minutes of audio: pieces of 2000 frames each (160 s apiece at 12.5 frames a second; 15 MB at 48 kHz)."""
    return tts_pb.SynthesizeStreamRequest(
        config=synthesis_config(profile_id, 2000, output_format=LINEAR16_48K),
        text=" ".join(SENTENCES[i % len(SENTENCES)] for i in range(pieces)),
    )


def test_a_client_that_cancels_stops_the_synthesis_at_once(platform: Platform, tenant_b: TenantData) -> None:
    """The signal: TTS's voice_tts_queue_depth gauge (requests admitted and not finished) drops back to 0, and its
    access log records the SynthesizeStream as CANCELLED, long before the request could have finished."""
    assert queue_depth(platform.tts) == 0
    call = platform.tts_stub.SynthesizeStream(
        long_request(tenant_b.profile.id), metadata=platform.as_tenant("b")
    )
    for _ in range(4):  # the start and some audio: generation is under way
        next(call)
    assert queue_depth(platform.tts) == 1
    started = time.monotonic()
    call.cancel()
    stopped_after = wait_for_queue_depth(platform.tts, 0, timeout=5)
    assert stopped_after < 2.0, stopped_after
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        cancelled = [
            record
            for record in platform.tts.json_logs()
            if record.get("message") == "rpc"
            and record.get("rpc_method") == f"/{TTS_SERVICE}/SynthesizeStream"
            and record.get("code") == "CANCELLED"
        ]
        if cancelled:
            break
        time.sleep(0.1)
    assert cancelled, "TTS did not log the SynthesizeStream as cancelled"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_slow_reader_leaves_the_gateway_memory_flat(platform: Platform, tenant_b: TenantData) -> None:
    """The client reads one message, then nothing for a while, then the rest: with one message in flight per
    direction (and small windows towards TTS), what the client has not read waits in TTS, not in the gateway."""
    gateway_pid = platform.gateway.pid
    before = rss_bytes(gateway_pid)
    # One piece: 160 s of audio, 15 MB at 48 kHz.
    request = long_request(tenant_b.profile.id, pieces=1)
    call = platform.tts_stub.SynthesizeStream(request, metadata=platform.as_tenant("b"), timeout=600)
    next(call)
    peak = before
    stalled_until = time.monotonic() + 8  # TTS would make several MB in this time; it is held back instead
    while time.monotonic() < stalled_until:
        peak = max(peak, rss_bytes(gateway_pid))
        time.sleep(0.2)
    peak = max(peak, rss_bytes(gateway_pid))
    stalled_peak = peak
    received = 0
    for response in call:
        received += len(response.audio.data)
        peak = max(peak, rss_bytes(gateway_pid))
    megabytes = {"before": before >> 20, "stalled peak": stalled_peak >> 20, "peak": peak >> 20}
    # What crossed the gateway: more than the bound on its growth, so buffering it there would have shown.
    assert received > 14 * 1024 * 1024, (received, megabytes)
    assert peak - before < 10 * 1024 * 1024, megabytes


# -- the README's examples ------------------------------------------------------------------------------------------


@dataclass
class GrpcurlCommand:
    method: str  # "voice.profiles.v1.ProfileService/CreateProfile"
    body: str | None  # the -d JSON, None for "-d @" (stdin) or no -d


def readme_grpcurl_commands() -> list[GrpcurlCommand]:
    """Every grpcurl command in the README's sh blocks (lines joined at a trailing backslash)."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        joined = block.replace("\\\n", " ")
        # A quoted -d body may span lines (no backslash): join lines until the quotes balance.
        lines: list[str] = []
        for line in joined.splitlines():
            if lines and lines[-1].count("'") % 2 == 1:
                lines[-1] += " " + line
            else:
                lines.append(line)
        for line in lines:
            start = line.find("grpcurl ")
            if start < 0:
                continue
            words = shlex.split(line[start:].split("|")[0] if "-d @" not in line else line[start:])
            body = words[words.index("-d") + 1] if "-d" in words else None
            method = words[-1]
            commands.append(GrpcurlCommand(method, None if body == "@" else body))
    return commands


def test_the_readme_grpcurl_requests_work_through_the_gateway(
    platform: Platform, tenant_b: TenantData
) -> None:
    """grpcurl is not installed here: each README command's JSON body is parsed into the method's request type
    (found through the descriptor pool) and sent through the gateway with the saved key, as grpcurl would."""
    commands = readme_grpcurl_commands()
    assert commands, "the README has no grpcurl examples"
    text = README.read_text()
    assert "grpcurl -plaintext" in text and "127.0.0.1:50051" in text
    assert '-H "authorization: Bearer $(cat data/admin-api-key)"' in text
    pool = descriptor_pool.Default()
    sent = 0
    placeholders = {"<id>": tenant_b.profile.id, "<profile-id>": tenant_b.profile.id}
    for command in commands:
        if "/" not in command.method:
            continue  # `list` and `describe`: reflection, checked below
        service_name, method_name = command.method.split("/")
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        body = command.body or "{}"
        for placeholder, value in placeholders.items():
            body = body.replace(placeholder, value)
        request = json_format.Parse(body, request_class())
        if isinstance(request, asr_pb.TranscribeRequest):
            request.content = speech_wav(SENTENCES[0], "slt")  # the example pipes a recording in (-d @)
        call: Any = (
            platform.gateway.channel.unary_stream
            if method.server_streaming
            else platform.gateway.channel.unary_unary
        )(
            f"/{service_name}/{method_name}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
        )
        result = call(request, metadata=platform.as_tenant("b"), timeout=120)
        if method.server_streaming:
            assert list(result), command
        sent += 1
    assert sent >= 3, commands
    # `grpcurl list` through the gateway: reflection shows exactly the public services.
    reflection = reflection_pb2_grpc.ServerReflectionStub(platform.gateway.channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=platform.as_tenant("b")
    )
    listed = {service.name for answer in answers for service in answer.list_services_response.service}
    assert {PROFILE_SERVICE, TTS_SERVICE, ASR_SERVICE, "voice.auth.v1.ApiKeyService"} <= listed
    assert not any("GenerationIngest" in name or "KeyVerification" in name for name in listed)


# -- a backend restarted --------------------------------------------------------------------------------------------


def test_a_restarted_backend_is_unavailable_then_serves_again_without_restarting_the_gateway(
    platform: Platform, tenant_b: TenantData
) -> None:
    stub, metadata = platform.profiles_stub, platform.as_tenant("b")
    request = pb.GetProfileRequest(id=tenant_b.profile.id)
    outcomes: list[tuple[float, grpc.StatusCode, str]] = []
    running = threading.Event()
    running.set()

    def traffic() -> None:
        while running.is_set():
            try:
                stub.GetProfile(request, metadata=metadata, timeout=10)
                outcomes.append((time.monotonic(), grpc.StatusCode.OK, ""))
            except grpc.RpcError as error:
                outcomes.append((time.monotonic(), error.code(), error.details() or ""))
            time.sleep(0.05)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        time.sleep(0.5)
        assert stop(platform.profiles, signal.SIGKILL) == -signal.SIGKILL
        platform.profiles.close()
        killed_at = time.monotonic()
        time.sleep(3.0)
        down = [outcome for outcome in outcomes if outcome[0] > killed_at + 1.0]
        assert down and all(code == grpc.StatusCode.UNAVAILABLE for _, code, _ in down), down[:5]
        # A clear message: which backend, and that it cannot be reached (for the call itself, or for its key check).
        assert all("profile" in details and "unavailable" in details.lower() for _, _, details in down), down[
            :3
        ]

        platform.profiles = ServiceProcess(platform.env, platform.log_dir)
        platform.profiles.wait_for(SERVING, timeout=60)
        back_at = time.monotonic()
        deadline = back_at + 15
        while not any(at > back_at and code == grpc.StatusCode.OK for at, code, _ in outcomes):
            assert time.monotonic() < deadline, outcomes[-5:]
            time.sleep(0.1)
    finally:
        running.clear()
        worker.join(timeout=15)
    recovered = [at for at, code, _ in outcomes if code == grpc.StatusCode.OK and at > back_at]
    assert recovered[0] - back_at < 10
    assert platform.gateway.popen.poll() is None  # the same gateway process all along
    stub.GetProfile(request, metadata=metadata, timeout=10)


# -- make run ---------------------------------------------------------------------------------------------------------


def test_make_run_creates_the_local_key_and_serves_through_the_gateway(tmp_path: Path) -> None:
    env = service_env(
        tmp_path / "data",
        TTS_MODEL=str(tmp_path / "no-model"),  # TTS runs NOT_SERVING: not needed here
        HF_HUB_CACHE=str(tmp_path / "hub"),
        OMP_NUM_THREADS="1",
    )
    assert "VOICE_INTERNAL_TOKEN" not in env
    with service(env, tmp_path / "logs", module="voice_common.launcher") as launcher:
        launcher.wait_for(SERVING, timeout=START_SECONDS)  # the profile service
        gateway_port = int(env["GATEWAY_PORT"])
        with grpc.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
            deadline = time.monotonic() + START_SECONDS
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = health.Check(
                        health_pb2.HealthCheckRequest(service=PROFILE_SERVICE), timeout=1
                    ).status
                except grpc.RpcError:
                    status = None
                if status == SERVING:
                    break
                assert time.monotonic() < deadline, launcher.describe()
                time.sleep(0.2)
            key_file = tmp_path / "data" / "admin-api-key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            key = key_file.read_text().strip()
            assert launcher.stdout().count(key) == 1  # printed once, on the first start
            stub = pb_grpc.ProfileServiceStub(channel)
            made = stub.CreateProfile(
                pb.CreateProfileRequest(name="Via make run"), metadata=bearer(key), timeout=10
            )
            assert made.profile.id
        direct = pb_grpc.ProfileServiceStub(launcher.channel)  # the profile port, no token
        assert (
            code_of(lambda: direct.ListProfiles(pb.ListProfilesRequest(), timeout=10))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert stop(launcher, signal.SIGINT, timeout=60) == 0, launcher.describe()
        assert "[launcher] all services stopped" in launcher.stderr()

    # A second start keeps the key, says where it is, and prints no key.
    with service(env, tmp_path / "logs", module="voice_common.launcher") as again:
        again.wait_for(SERVING, timeout=START_SECONDS)
        deadline = time.monotonic() + 30
        while f"using the admin key in {key_file}" not in again.stdout():
            assert time.monotonic() < deadline, again.describe()
            time.sleep(0.2)
        assert key not in again.stdout() and key_file.read_text().strip() == key
        assert stop(again, signal.SIGINT, timeout=60) == 0, again.describe()
