"""Property-based fuzzing of every public RPC, through the gateway, in front of the real services.

The methods come from the gateway's own table (``voice_gateway.routes.public_routes``), and each request is drawn
from the method's input descriptor (``voice_testing.proto_strategies``): a method added to a public proto is fuzzed
without touching this file, and the last test fails if one was not. Each drawn request (a few drawn messages for a
client stream) is sent to the real gateway, which forwards it to the real profile, TTS (tiny model) and ASR
(tiny.en) processes. What must hold:

* the answer is OK or a precise refusal (``PRECISE_REFUSALS``): never INTERNAL, UNKNOWN, a hang or a fallen
  service;
* a refused call writes nothing: the database's rows and the store's objects are the same after it as before;
* afterwards every service still serves, no log holds an unhandled error, and ``voice-admin doctor`` finds
  nothing orphaned.

The draws lean on real values half the time (``hints``): ids of a profile, sample, generation and key that exist,
a real speech clip where audio goes, the configured models for LoadModel, so requests get past their first check
as well as failing it. Reproducible: derandomized, no example database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from e2e_support import SERVING
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from hostile_input_support import (
    BACKENDS,
    PRECISE_REFUSALS,
    Platform,
    call,
    doctor,
    method_of,
    running_platform,
    stored,
    unhandled_errors,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.audio.v1 import audio_pb2
from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_common.api_keys import SCOPES
from voice_gateway.routes import Route, public_routes
from voice_testing.media_files import encode_file, speechlike
from voice_testing.postgres import fresh_database
from voice_testing.proto_strategies import messages, mutants, request_streams, stream_mutants
from voice_testing.s3_server import unique_bucket_name
from voice_testing.speech import SENTENCES, speak, speech_wav

pytestmark = pytest.mark.slow

EXAMPLES = 32  # per method
# Methods that spend model time on every accepted example: fewer of them keep the file inside CI's limits.
SLOW_EXAMPLES = {"Synthesize": 24, "SynthesizeStream": 24, "SynthesizeDuplex": 24, "Transcribe": 24}
SLOW_EXAMPLES |= {"StreamingTranscribe": 24, "LoadModel": 16}
# Run last, in this order, so they take away what the others use as late as possible.
_LATE = ("Update", "Delete", "Revoke", "UnloadModel", "LoadModel")
# The second run, on PostgreSQL and an S3 server, draws fewer: the embedded run covers the breadth.
CLUSTER_EXAMPLES = 10
FUZZED: dict[str, dict[str, Counter[str]]] = {}  # storage -> method -> answers


def _lateness(route: Route) -> tuple[int, str]:
    rank = next((index + 1 for index, prefix in enumerate(_LATE) if route.name.startswith(prefix)), 0)
    return rank, route.method


ROUTES = sorted(public_routes().values(), key=_lateness)


class Seeds:
    """Real resources of the fuzzing tenant, and the values that name them."""

    def __init__(self, platform: Platform) -> None:
        self.wav = speech_wav(SENTENCES[0], "slt")
        self.flac = encode_file(speechlike(2.0, 16000), 16000, "flac")
        profile = call(
            platform, route("ProfileService", "CreateProfile"), pb.CreateProfileRequest(name="Seed")
        )
        assert profile.ok, profile
        self.profile_id = profile.responses[0].profile.id
        sample = call(
            platform,
            route("ProfileService", "AddSample"),
            [
                pb.AddSampleRequest(
                    metadata=pb.SampleMetadata(profile_id=self.profile_id, reference_text=SENTENCES[0])
                ),
                pb.AddSampleRequest(chunk=self.wav),
            ],
        )
        assert sample.ok, sample
        self.sample_id = sample.responses[0].sample.id
        synthesis = call(
            platform,
            route("TtsService", "Synthesize"),
            tts_pb.SynthesizeRequest(
                config=tts_pb.SynthesisConfig(voice=tts_pb.Voice(profile_id=self.profile_id), store=True),
                text="Kept.",
            ),
        )
        assert synthesis.ok, synthesis
        self.generation_id = synthesis.responses[0].summary.generation_id
        # A key the fuzzing may list and revoke; never the one it calls with.
        victim = call(
            platform,
            route("ApiKeyService", "CreateApiKey"),
            keys_pb.CreateApiKeyRequest(name="victim", scopes=["profiles:read"]),
        )
        assert victim.ok, victim
        self.key_id = victim.responses[0].api_key.id
        self.tiny_model = str(platform.tiny_model)
        exported = call(
            platform, route("ProfileService", "ExportProfile"), pb.ExportProfileRequest(id=self.profile_id)
        )
        assert exported.ok, exported
        self.archive = b"".join(response.chunk for response in exported.responses)
        # One second of the speech as 16 kHz LINEAR16, for a live stream.
        self.pcm = (np.clip(speak(SENTENCES[0], "slt")[:16000], -1, 1) * 32767).astype("<i2").tobytes()

    def working_requests(self) -> dict[str, Any]:
        """A request each method accepts, by method name (a list for a client stream); a method missing here is
        fuzzed with whole drawn requests only."""
        linear16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000)
        config = tts_pb.SynthesisConfig(
            voice=tts_pb.Voice(profile_id=self.profile_id),
            language="en",
            sampling=tts_pb.SamplingParameters(max_new_tokens=2),
        )
        return {
            "CreateProfile": pb.CreateProfileRequest(name="Fuzzed", language="en"),
            "GetProfile": pb.GetProfileRequest(id=self.profile_id),
            "ListProfiles": pb.ListProfilesRequest(page_size=5),
            "UpdateProfile": pb.UpdateProfileRequest(
                profile=pb.Profile(id=self.profile_id, name="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            "DeleteProfile": pb.DeleteProfileRequest(id=self.profile_id),
            "AddSample": [
                pb.AddSampleRequest(
                    metadata=pb.SampleMetadata(
                        profile_id=self.profile_id,
                        reference_text="Words.",
                        file_name="a.wav",
                        mime_type="audio/wav",
                    )
                ),
                pb.AddSampleRequest(chunk=self.wav[: len(self.wav) // 2]),
                pb.AddSampleRequest(chunk=self.wav[len(self.wav) // 2 :]),
            ],
            "ListSamples": pb.ListSamplesRequest(profile_id=self.profile_id, page_size=5),
            "UpdateSample": pb.UpdateSampleRequest(
                sample=pb.Sample(id=self.sample_id, reference_text="Other words."),
                update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
            ),
            "DeleteSample": pb.DeleteSampleRequest(id=self.sample_id),
            "GetSampleAudio": pb.GetSampleAudioRequest(id=self.sample_id, format=linear16),
            "GetGeneration": pb.GetGenerationRequest(id=self.generation_id),
            "ListGenerations": pb.ListGenerationsRequest(profile_id=self.profile_id, page_size=5),
            "DeleteGeneration": pb.DeleteGenerationRequest(id=self.generation_id),
            "GetGenerationStats": pb.GetGenerationStatsRequest(profile_id=self.profile_id),
            "GetGenerationAudio": pb.GetGenerationAudioRequest(id=self.generation_id, format=linear16),
            "GetDownloadUrl": pb.GetDownloadUrlRequest(sample_id=self.sample_id),
            "ExportProfile": pb.ExportProfileRequest(id=self.profile_id),
            "ImportProfile": [
                pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata(name="Imported")),
                pb.ImportProfileRequest(chunk=self.archive),
            ],
            "Synthesize": tts_pb.SynthesizeRequest(config=config, text="Hello there."),
            "SynthesizeStream": tts_pb.SynthesizeStreamRequest(config=config, text="Hello there."),
            "SynthesizeDuplex": [
                tts_pb.SynthesizeDuplexRequest(config=config),
                tts_pb.SynthesizeDuplexRequest(text="Hello "),
                tts_pb.SynthesizeDuplexRequest(text="there."),
            ],
            "Transcribe": asr_pb.TranscribeRequest(content=self.wav),
            "StreamingTranscribe": [
                asr_pb.StreamingTranscribeRequest(config=asr_pb.StreamingConfig(format=linear16)),
                asr_pb.StreamingTranscribeRequest(audio=self.pcm[: len(self.pcm) // 2]),
                asr_pb.StreamingTranscribeRequest(audio=self.pcm[len(self.pcm) // 2 :]),
            ],
            "CreateApiKey": keys_pb.CreateApiKeyRequest(name="fuzzed", scopes=["tts"]),
            "RevokeApiKey": keys_pb.RevokeApiKeyRequest(id=self.key_id),
        }

    def hints(self, field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING and (name == "id" or name.endswith("_id")):
            if name == "request_id":
                return st.uuids().map(str)
            known = [self.profile_id, self.sample_id, self.generation_id, self.key_id]
            return st.one_of(
                st.sampled_from(known), st.uuids().map(str), st.sampled_from([k.upper() for k in known])
            )
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.sampled_from([self.wav, self.flac, self.wav[: len(self.wav) // 3], self.flac[:200]])
        if name in ("name", "description", "text", "transcript", "reference_text"):
            return st.sampled_from(["A voice", "Hello there.", "Ünïcödé voice", "声"])
        if name == "language":
            return st.sampled_from(["en", "auto", "de", "EN", "xx", "english", "Chinese"])
        if name == "mime_type":
            return st.sampled_from(["audio/wav", "audio/flac", "audio/mpeg", "text/plain", "application/zip"])
        if name == "scopes":
            return st.sampled_from(sorted(SCOPES))
        if name == "model":
            return st.sampled_from([self.tiny_model, "tiny.en", "", "/nonexistent", "Qwen/nope"])
        if name == "device":
            return st.sampled_from(["cpu", "", "cuda", "cuda:7", "mps", "auto"])
        if name in ("dtype", "compute_type"):
            return st.sampled_from(["float32", "int8", "", "bfloat16", "float16", "int4"])
        return None


def route(service: str, name: str) -> Route:
    return next(r for r in ROUTES if r.service.endswith(f".{service}") and r.name == name)


# A synthesis asks for at most a few frames, or for a number out of range: a fuzzed 4096-frame request would be
# minutes of CPU without testing anything more.
OVERRIDES = {
    "voice.tts.v1.SamplingParameters.max_new_tokens": st.one_of(
        st.integers(1, 3), st.sampled_from([0, -1, 4097, 2**31 - 1, -(2**31)])
    )
}


def requests_of(route_: Route, seeds: Seeds) -> st.SearchStrategy[Any]:
    """Requests drawn whole from the method's input type, and, as often, a request that works (where the seeds
    hold one) with some of its fields drawn: the second kind reaches the code behind the first check."""
    descriptor = method_of(route_).input_type
    working = seeds.working_requests().get(route_.name)
    if route_.request_streaming:
        whole = request_streams(descriptor, hints=seeds.hints, overrides=OVERRIDES, max_messages=4)
        if working is None:
            return whole
        return st.one_of(whole, stream_mutants(working, hints=seeds.hints, overrides=OVERRIDES))
    whole = messages(descriptor, hints=seeds.hints, overrides=OVERRIDES)
    if working is None:
        return whole
    return st.one_of(whole, mutants(working, hints=seeds.hints, overrides=OVERRIDES))


@pytest.fixture(scope="module", params=["embedded", "postgres_s3"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The platform on each storage in turn: embedded (SQLite and a folder), then PostgreSQL and moto's S3."""
    storage: dict[str, str] = {}
    if request.param == "postgres_s3":
        moto_server = request.getfixturevalue("moto_server")
        database_url = request.getfixturevalue("fuzz_database_url")
        storage = {
            "VOICE_DATABASE_URL": database_url,
            "VOICE_S3_ENDPOINT": moto_server.endpoint,
            "VOICE_S3_ACCESS_KEY": moto_server.access_key,
            "VOICE_S3_SECRET_KEY": moto_server.secret_key,
            "VOICE_S3_BUCKET": unique_bucket_name("fuzz"),
        }
    with running_platform(tmp_path_factory.mktemp(f"fuzz-{request.param}"), storage) as started:
        started.storage = request.param
        yield started


@pytest.fixture(scope="module")
def fuzz_database_url(postgres_admin_url: str) -> Iterator[str]:
    with fresh_database(postgres_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def seeds(platform: Platform) -> Seeds:
    return Seeds(platform)


def test_the_fuzzing_reaches_every_public_method() -> None:
    """What the methods' draws come from: every public method has a request type the builder handles."""
    assert {r.method for r in ROUTES} == set(public_routes())
    assert len(ROUTES) >= 30  # 18 profile, 6 TTS, 5 ASR, 3 key methods when this was written
    for route_ in ROUTES:
        assert method_of(route_).input_type.full_name


@pytest.mark.parametrize("route_", ROUTES, ids=[r.method.split(".")[-1] for r in ROUTES])
def test_fuzzed_requests_get_a_precise_answer_and_refusals_write_nothing(
    platform: Platform, seeds: Seeds, route_: Route
) -> None:
    outcomes = FUZZED.setdefault(platform.storage, {}).setdefault(route_.method, Counter())
    # A request the model must serve (the ModelControl methods) can wait behind another one: give it time.
    timeout = 120.0

    refusals = PRECISE_REFUSALS
    if route_.name == "LoadModel":
        # A model that is neither a directory nor in the hub cache, with the hub out of reach (HF_HUB_OFFLINE):
        # the service says so, UNAVAILABLE, as it would while the network is down.
        refusals = refusals | {grpc.StatusCode.UNAVAILABLE}

    @settings(
        max_examples=CLUSTER_EXAMPLES
        if platform.storage == "postgres_s3"
        else SLOW_EXAMPLES.get(route_.name, EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests_of(route_, seeds))
    def fuzz(requests: Any) -> None:
        before = stored(platform)
        answer = call(platform, route_, requests, timeout=timeout)
        outcomes[answer.code.name] += 1
        assert answer.ok or answer.code in refusals, (
            f"{route_.method} answered {answer.code.name}: {answer.details}; the services logged: "
            f"{unhandled_errors(platform.processes().values())[-2:]}"
        )
        if not answer.ok:
            added = stored(platform).added_since(before)
            assert not added, (
                f"{route_.method} refused ({answer.code.name}: {answer.details}) but wrote {added}"
            )

    fuzz()


def test_durations_and_timestamps_out_of_protobufs_range_are_invalid_argument(
    platform: Platform, seeds: Seeds
) -> None:
    """Regression (found by the fuzzing): timedelta and Timestamp.ToDatetime raised on these, an INTERNAL."""
    huge = duration_pb2.Duration(seconds=-(2**63))
    bad_nanos = timestamp_pb2.Timestamp(nanos=-(2**31))
    far = timestamp_pb2.Timestamp(seconds=2**63 - 1)
    cases: list[tuple[str, str, Any]] = [
        ("ApiKeyService", "CreateApiKey", keys_pb.CreateApiKeyRequest(name="k", scopes=["tts"], ttl=huge)),
        ("ProfileService", "CreateProfile", pb.CreateProfileRequest(name="T", temporary=True, ttl=huge)),
        ("ProfileService", "GetDownloadUrl", pb.GetDownloadUrlRequest(sample_id=seeds.sample_id, ttl=huge)),
        ("ProfileService", "ListGenerations", pb.ListGenerationsRequest(create_time_start=bad_nanos)),
        ("ProfileService", "ListGenerations", pb.ListGenerationsRequest(create_time_end=far)),
        ("ProfileService", "GetGenerationStats", pb.GetGenerationStatsRequest(create_time_end=bad_nanos)),
        (
            "ProfileService",
            "UpdateProfile",
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=seeds.profile_id, expire_time=far),
                update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
            ),
        ),
    ]
    for service, name, request in cases:
        answer = call(platform, route(service, name), request)
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, (name, request, answer)


def test_a_search_for_a_nul_character_is_invalid_argument(platform: Platform) -> None:
    """Regression (found by the fuzzing on PostgreSQL): its text cannot hold NUL, and the query failed, an
    INTERNAL; SQLite took it."""
    for name, request in (
        ("ListProfiles", pb.ListProfilesRequest(name_contains="a\x00b")),
        ("ListGenerations", pb.ListGenerationsRequest(text_contains="\x00")),
    ):
        answer = call(platform, route("ProfileService", name), request)
        assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, (name, answer)


def test_a_stream_refused_at_its_first_message_gets_the_refusal_every_time(platform: Platform) -> None:
    """Regression (found by the fuzzing): the backend refuses the stream while the client is still sending, and
    grpc.aio replaced the backend's status in the gateway with INTERNAL "Internal error from Core" in about one
    call of 30 (voice_client.stream_call_status keeps the real one)."""
    upload = [pb.AddSampleRequest(chunk=b"\0" * 4096) for _ in range(4)]
    live = [asr_pb.StreamingTranscribeRequest(audio=b"\0" * 4096) for _ in range(4)]
    answers: Counter[str] = Counter()
    for _ in range(100):
        answers[call(platform, route("ProfileService", "AddSample"), upload).code.name] += 1
    for _ in range(50):
        answers[call(platform, route("AsrService", "StreamingTranscribe"), live).code.name] += 1
    assert answers == {"INVALID_ARGUMENT": 150}, answers


def test_after_the_fuzzing_every_service_serves_and_nothing_is_orphaned(platform: Platform) -> None:
    """Run after the fuzzing (the module in order): every public method was called, the processes are alive and
    SERVING (after a LoadModel of the configured models, since the fuzzing may have unloaded them), no process
    logged an unhandled error, and the store holds nothing a row does not own."""
    fuzzed = FUZZED.get(platform.storage, {})
    missing = sorted(set(public_routes()) - set(fuzzed))
    assert not missing, f"not fuzzed (run the whole module): {missing}"
    summary = "\n".join(
        f"{method}: {dict(sorted(counts.items()))}" for method, counts in sorted(fuzzed.items())
    )
    total = sum(sum(counts.values()) for counts in fuzzed.values())
    print(f"\n{total} fuzzed calls on {platform.storage}, answers by method:\n{summary}")
    # A request type with no fields has one example (hypothesis stops when it has drawn every distinct one).
    assert total >= 5 * len(fuzzed), summary
    for service, load in (
        ("TtsService", tts_pb.LoadModelRequest(model=str(platform.tiny_model))),
        ("AsrService", asr_pb.LoadModelRequest()),
    ):
        answer = call(platform, route(service, "LoadModel"), load, timeout=180)
        assert answer.ok, answer
    for name, process in platform.processes().items():
        assert process.popen.poll() is None, f"{name} died: {process.describe()}"
        assert process.health_status() == SERVING, name
    for service_name, backend in BACKENDS.items():
        assert platform.gateway.health_status(service_name) == SERVING, service_name
        assert platform.processes()[backend].health_status(service_name) == SERVING, service_name
    assert not unhandled_errors(platform.processes().values())
    report = doctor(platform.env)
    assert report["exit_code"] == 0, report
    assert report["objects_without_rows"] == [] and report["rows_without_objects"] == [], report
    # Still does real work.
    created = call(platform, route("ProfileService", "CreateProfile"), pb.CreateProfileRequest(name="After"))
    assert created.ok, created
