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
import pytest
from e2e_support import SERVING
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
from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_common.api_keys import SCOPES
from voice_gateway.routes import Route, public_routes
from voice_testing.media_files import encode_file, speechlike
from voice_testing.proto_strategies import messages, request_streams
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow

EXAMPLES = 24  # per method
# Methods that spend model time on every accepted example: fewer of them keep the file inside CI's limits.
SLOW_EXAMPLES = {"Synthesize": 16, "SynthesizeStream": 16, "SynthesizeDuplex": 16, "Transcribe": 16}
SLOW_EXAMPLES |= {"StreamingTranscribe": 16, "LoadModel": 12}
# Run last, in this order, so they take away what the others use as late as possible.
_LATE = ("Update", "Delete", "Revoke", "UnloadModel", "LoadModel")
FUZZED: dict[str, Counter[str]] = {}


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
_FRAMES = st.one_of(st.integers(1, 3), st.sampled_from([0, -1, 4097, 2**31 - 1, -(2**31)]))


def _bounded(hints: Any) -> Any:
    def hinted(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        if field.full_name == "voice.tts.v1.SamplingParameters.max_new_tokens":
            return _FRAMES
        hint: st.SearchStrategy[Any] | None = hints(field)
        return hint

    return hinted


def requests_of(route_: Route, seeds: Seeds) -> st.SearchStrategy[Any]:
    descriptor = method_of(route_).input_type
    hints = _bounded(seeds.hints)
    if route_.request_streaming:
        return request_streams(descriptor, hints=hints, max_messages=4)
    return messages(descriptor, hints=hints)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("fuzz")) as started:
        yield started


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
    outcomes = FUZZED.setdefault(route_.method, Counter())
    # A request the model must serve (the ModelControl methods) can wait behind another one: give it time.
    timeout = 120.0

    refusals = PRECISE_REFUSALS
    if route_.name == "LoadModel":
        # A model that is neither a directory nor in the hub cache, with the hub out of reach (HF_HUB_OFFLINE):
        # the service says so, UNAVAILABLE, as it would while the network is down.
        refusals = refusals | {grpc.StatusCode.UNAVAILABLE}

    @settings(
        max_examples=SLOW_EXAMPLES.get(route_.name, EXAMPLES),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests_of(route_, seeds))
    def fuzz(requests: Any) -> None:
        before = stored(platform.data_dir)
        answer = call(platform, route_, requests, timeout=timeout)
        outcomes[answer.code.name] += 1
        assert answer.ok or answer.code in refusals, (
            f"{route_.method} answered {answer.code.name}: {answer.details}; the services logged: "
            f"{unhandled_errors(platform.processes().values())[-2:]}"
        )
        if not answer.ok:
            added = stored(platform.data_dir).added_since(before)
            assert not added, (
                f"{route_.method} refused ({answer.code.name}: {answer.details}) but wrote {added}"
            )

    fuzz()


def test_after_the_fuzzing_every_service_serves_and_nothing_is_orphaned(platform: Platform) -> None:
    """Run after the fuzzing (the module in order): every public method was called, the processes are alive and
    SERVING (after a LoadModel of the configured models, since the fuzzing may have unloaded them), no process
    logged an unhandled error, and the store holds nothing a row does not own."""
    missing = sorted(set(public_routes()) - set(FUZZED))
    assert not missing, f"not fuzzed (run the whole module): {missing}"
    summary = "\n".join(
        f"{method}: {dict(sorted(counts.items()))}" for method, counts in sorted(FUZZED.items())
    )
    print(f"\nfuzzed answers by method:\n{summary}")
    # A request type with no fields has one example (hypothesis stops when it has drawn every distinct one).
    assert sum(sum(counts.values()) for counts in FUZZED.values()) >= 10 * len(FUZZED), summary
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
