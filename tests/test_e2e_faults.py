"""End to end, measured: faults of the platform's dependencies and processes, met by clients of the gateway.

The real processes on loopback: PostgreSQL (a throwaway cluster of this module, never the machine's shared server),
an S3 server (moto, restarted on the same port with its objects, as MinIO keeps its disk), the profile, TTS (the tiny
model) and ASR (tiny.en) services and the gateway, with the internal credential between them. Every client call has a
deadline. For each fault the test asserts what the client is told (the code, and a message that says what failed and
what to do), that the platform comes back by itself once the dependency returns (health SERVING again and a fresh
call works, with no service restarted), and that ``voice-admin doctor`` finds nothing orphaned.

The processes start once for the module; the tests that kill TTS and ASR come last and start them again as the
launcher (or Kubernetes) would, on the same ports.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from e2e_support import (
    NOT_SERVING,
    SERVING,
    ServiceProcess,
    admin,
    bearer,
    create_key,
    explain,
    service,
    service_env,
    start_gateway,
    stop,
    with_internal_token,
)

from tools.tiny_model import build_tiny_model
from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.asr.v1 import asr_service_pb2_grpc as asr_grpc
from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.audio import decode_audio
from voice_testing.postgres import ThrowawayCluster, fresh_database, restartable_cluster
from voice_testing.s3_server import MotoServer, unique_bucket_name
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
# Importing torch, qwen_tts and CTranslate2 and loading both models takes a while on a small machine.
START_SECONDS = 180.0
# How long the platform may take to notice that a dependency is back: health re-checks every 0.5 s while not
# serving, the gateway mirrors its backends' health, and channels reconnect with a back-off of about a second.
RECOVERY_SECONDS = 30.0
# Every call of these tests has a deadline: a hang fails the test instead of stalling it.
CALL_SECONDS = 60.0
PROFILE_SERVICE = "voice.profiles.v1.ProfileService"
TTS_SERVICE = "voice.tts.v1.TtsService"
ASR_SERVICE = "voice.asr.v1.AsrService"
TENANT = "faults"
# The ERROR a fault is expected to log: a background pass (the sweeper's, the transcript filler's) that cannot reach
# the database, once each interval while it is down (voice_common.periodic). Any other ERROR fails the test.
EXPECTED_ERROR_SUFFIX = "failed; retrying next interval"
LINEAR16_16K = audio_pb2.AudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channels=1
)


@dataclass
class Platform:
    env: dict[str, str]
    log_dir: Path
    postgres: ThrowawayCluster
    s3: MotoServer
    profiles: ServiceProcess
    tts: ServiceProcess
    asr: ServiceProcess
    gateway: ServiceProcess
    key: str = ""
    profile_id: str = ""
    recoveries: dict[str, float] = field(default_factory=dict)  # fault -> seconds until a fresh call worked
    answers: dict[str, str] = field(default_factory=dict)  # fault -> the code and message the client got

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.key)

    @property
    def profiles_stub(self) -> pb_grpc.ProfileServiceStub:
        return pb_grpc.ProfileServiceStub(self.gateway.channel)

    @property
    def tts_stub(self) -> tts_grpc.TtsServiceStub:
        return tts_grpc.TtsServiceStub(self.gateway.channel)

    @property
    def asr_stub(self) -> asr_grpc.AsrServiceStub:
        return asr_grpc.AsrServiceStub(self.gateway.channel)

    def start_tts(self) -> None:
        self.tts = ServiceProcess(self.env, self.log_dir, module="voice_tts", prefix="TTS")

    def start_asr(self) -> None:
        self.asr = ServiceProcess(self.env, self.log_dir, module="voice_asr", prefix="ASR")

    def wait_until_serving(self, timeout: float = RECOVERY_SECONDS) -> None:
        """Every backend SERVING, as the gateway sees it (it mirrors their health)."""
        for name in (PROFILE_SERVICE, TTS_SERVICE, ASR_SERVICE):
            self.gateway.wait_for(SERVING, timeout=timeout, service=name)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("faults-e2e")
    # A talker that never chooses EOS: a request runs to max_new_tokens frames, so its length is the test's choice.
    tiny = build_tiny_model(root / "tiny-qwen3-tts", seed=0, never_eos=True)
    log_dir = root / "logs"
    with contextlib.ExitStack() as stack:
        postgres = stack.enter_context(restartable_cluster())
        s3 = stack.enter_context(MotoServer())
        database_url = stack.enter_context(fresh_database(postgres.url))
        env = with_internal_token(
            service_env(
                root / "data",
                VOICE_DATABASE_URL=database_url,
                VOICE_S3_ENDPOINT=s3.endpoint,
                VOICE_S3_ACCESS_KEY=s3.access_key,
                VOICE_S3_SECRET_KEY=s3.secret_key,
                VOICE_S3_BUCKET=unique_bucket_name("faults"),
                TTS_MODEL=str(tiny),
                TTS_PRELOAD="true",
                ASR_PRELOAD="true",
                ASR_CPU_THREADS="1",
                HF_HUB_CACHE=str(root / "hub"),
                OMP_NUM_THREADS="1",
                # The sweeper retries the object deletes a store outage left in the outbox (their back-off
                # starts at 5 s): every second here, so the test sees the service clean up by itself.
                PROFILES_SWEEP_INTERVAL_SECONDS="1",
            )
        )
        migrated = admin(env, "migrate")
        assert migrated.returncode == 0, explain(migrated)
        profiles = stack.enter_context(service(env, log_dir))
        first_tts = ServiceProcess(env, log_dir, module="voice_tts", prefix="TTS")
        first_asr = ServiceProcess(env, log_dir, module="voice_asr", prefix="ASR")
        current: list[Platform] = []
        # The last tests replace the TTS and ASR processes: close whichever are current at the end.
        stack.callback(
            lambda: [
                process.close()
                for process in ((current[0].tts, current[0].asr) if current else (first_tts, first_asr))
            ]
        )
        profiles.wait_for(SERVING, timeout=60)
        gateway = stack.enter_context(contextlib.closing(start_gateway(env, log_dir)))
        started = Platform(env, log_dir, postgres, s3, profiles, first_tts, first_asr, gateway)
        current.append(started)
        first_tts.wait_for(SERVING, timeout=START_SECONDS, service=TTS_SERVICE)
        first_asr.wait_for(SERVING, timeout=START_SECONDS, service=ASR_SERVICE)
        started.wait_until_serving()
        started.key = create_key(env, TENANT)
        profile = started.profiles_stub.CreateProfile(
            pb.CreateProfileRequest(name="Faults", language="en"), metadata=started.metadata, timeout=10
        ).profile
        started.profile_id = profile.id
        add_sample(started)  # TTS speaks with this voice
        yield started
        # The figures for docs/operations.md (seen with pytest -s).
        print("\nwhat the clients were told:", json.dumps(started.answers, indent=1))
        print("recovery after each fault (s):", json.dumps(started.recoveries, indent=1))


@pytest.fixture(autouse=True)
def dependencies_back(platform: Platform) -> Iterator[None]:
    """After each test, whatever a failed test left down is up again, so the next one meets a whole platform."""
    yield
    if not platform.s3.running:
        platform.s3.start()
    if platform.tts.popen.poll() is not None:
        platform.start_tts()
    if platform.asr.popen.poll() is not None:
        platform.start_asr()


# -- calls ----------------------------------------------------------------------------------------------------------


def upload_requests(
    profile_id: str, wav: bytes, halfway: threading.Event | None = None, resume: threading.Event | None = None
) -> Iterator[pb.AddSampleRequest]:
    """AddSample's stream; with ``halfway``/``resume`` it sets ``halfway`` after half the file and waits for
    ``resume`` (never longer than a call's deadline) before sending the rest."""
    yield pb.AddSampleRequest(
        metadata=pb.SampleMetadata(
            profile_id=profile_id, file_name="voice.wav", mime_type="audio/wav", reference_text=SENTENCES[0]
        )
    )
    pieces = [wav[start : start + 16 * 1024] for start in range(0, len(wav), 16 * 1024)]
    for index, piece in enumerate(pieces):
        if halfway is not None and index == len(pieces) // 2:
            halfway.set()
            if resume is not None:
                resume.wait(CALL_SECONDS)
        yield pb.AddSampleRequest(chunk=piece)


def add_sample(platform: Platform) -> pb.Sample:
    wav = speech_wav(SENTENCES[0], "slt")
    response = platform.profiles_stub.AddSample(
        upload_requests(platform.profile_id, wav), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    sample: pb.Sample = response.sample
    return sample


def synthesis_request(platform: Platform, frames: int, *, store: bool) -> tts_pb.SynthesizeStreamRequest:
    return tts_pb.SynthesizeStreamRequest(
        config=tts_pb.SynthesisConfig(
            voice=tts_pb.Voice(profile_id=platform.profile_id),
            language="en",
            seed=7,
            sampling=tts_pb.SamplingParameters(max_new_tokens=frames),
            store=store,
        ),
        text=SENTENCES[1],
    )


def synthesize_and_store(platform: Platform) -> str:
    """A short synthesis stored in the history; the generation's id."""
    summaries = [
        response.summary
        for response in platform.tts_stub.SynthesizeStream(
            synthesis_request(platform, 12, store=True), metadata=platform.metadata, timeout=CALL_SECONDS
        )
        if response.WhichOneof("payload") == "summary"
    ]
    assert summaries and summaries[0].generation_id, summaries
    return summaries[0].generation_id


def speech_pcm() -> bytes:
    """A sentence as 16 kHz 16-bit mono PCM, what a live client streams."""
    samples = decode_audio(speech_wav(SENTENCES[0], "slt"), target_rate=16000).samples
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def live_requests(
    pcm: bytes, started: threading.Event | None = None, stop_sending: threading.Event | None = None
) -> Iterator[asr_pb.StreamingTranscribeRequest]:
    """A live stream at twice real time (0.1 s of audio every 0.05 s), looping the sentence until
    ``stop_sending`` is set (or the audio ran once, without it); ``started`` is set after the first second."""
    yield asr_pb.StreamingTranscribeRequest(
        config=asr_pb.StreamingConfig(format=LINEAR16_16K, interim_results=True)
    )
    piece = 3200  # 0.1 s
    sent = 0
    stop_at = time.monotonic() + CALL_SECONDS
    while time.monotonic() < stop_at:
        offset = (sent * piece) % len(pcm)
        yield asr_pb.StreamingTranscribeRequest(audio=pcm[offset : offset + piece])
        sent += 1
        if started is not None and sent == 10:
            started.set()
        if stop_sending is None and (sent * piece) >= len(pcm):
            return
        if stop_sending is not None and stop_sending.wait(0.05):
            return


def transcribe_live(platform: Platform) -> str:
    summaries = [
        response.summary
        for response in platform.asr_stub.StreamingTranscribe(
            live_requests(speech_pcm()), metadata=platform.metadata, timeout=CALL_SECONDS
        )
        if response.WhichOneof("payload") == "summary"
    ]
    assert summaries, "the live stream ended without a summary"
    text: str = summaries[0].text
    return text


def drained(responses: Iterator[Any]) -> grpc.RpcError:
    """The error a streaming call ends with (reading it to the end); a call that succeeds fails the test."""
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; the fault should have ended it")


def failure_of(future: Future[Any]) -> grpc.RpcError:
    try:
        future.result(timeout=CALL_SECONDS + 10)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; the fault should have ended it")


def gateway_codes(platform: Platform, method: str) -> list[str]:
    """The codes of the gateway's access-log records of ``method`` (e.g. "ProfileService/AddSample"), in order."""
    return [
        str(record.get("code"))
        for record in platform.gateway.json_logs()
        if record.get("message") == "rpc" and str(record.get("rpc_method", "")).endswith(method)
    ]


def upload_refusal(platform: Platform) -> grpc.RpcError:
    """The error an upload is refused with. A refusal that comes while the client is still writing its stream can
    reach the client as INTERNAL "Internal error from Core" instead of the gateway's status (a race in grpc's
    client, voice_testing.client_races): the gateway's log must then show the real answer, UNAVAILABLE, and the
    upload is sent again, up to three times."""
    for _ in range(3):
        answered = len(gateway_codes(platform, "ProfileService/AddSample"))
        with ThreadPoolExecutor(1) as pool:
            error = failure_of(pool.submit(add_sample, platform))
        if not (error.code() == grpc.StatusCode.INTERNAL and error.details() == "Internal error from Core"):
            return error

        def logged(seen: int = answered) -> bool:
            return len(gateway_codes(platform, "ProfileService/AddSample")) > seen

        poll(logged, 10, "the gateway did not log the upload")
        assert gateway_codes(platform, "ProfileService/AddSample")[answered:] == ["UNAVAILABLE"]
        platform.answers["an upload while PostgreSQL is down, lost to the client race"] = describe(error)
    raise AssertionError("three uploads in a row lost the gateway's answer to a late write")


def describe(error: grpc.RpcError) -> str:
    return f"{error.code()}: {error.details()}"


def poll(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition()`` holds; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


# -- what the platform holds ----------------------------------------------------------------------------------------


def generation_ids(platform: Platform) -> set[str]:
    listed = platform.profiles_stub.ListGenerations(
        pb.ListGenerationsRequest(page_size=100), metadata=platform.metadata, timeout=10
    )
    return {generation.id for generation in listed.generations}


def sample_ids(platform: Platform) -> set[str]:
    listed = platform.profiles_stub.ListSamples(
        pb.ListSamplesRequest(profile_id=platform.profile_id), metadata=platform.metadata, timeout=10
    )
    return {sample.id for sample in listed.samples}


def assert_doctor_finds_nothing_orphaned(platform: Platform) -> dict[str, Any]:
    """``voice-admin doctor`` exits 0 (objects a failed upload could not delete yet are pending, not orphaned);
    and no process logged an error of its own (a fault is the client's answer and a WARNING, not an ERROR)."""
    for process in (platform.profiles, platform.tts, platform.asr, platform.gateway):
        errors = [
            record
            for record in process.json_logs()
            if record.get("level") in ("ERROR", "CRITICAL")
            and not str(record.get("message", "")).endswith(EXPECTED_ERROR_SUFFIX)
        ]
        assert errors == [], errors[:3]
    result = admin(platform.env, "doctor", "--json")
    assert result.returncode == 0, explain(result)
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["rows_without_objects"] == [] and report["objects_without_rows"] == [], report
    return report


def wait_until_the_outbox_is_empty(platform: Platform) -> float:
    """Seconds until the sweeper (not a person) has done the object deletes a fault left waiting."""
    started = time.monotonic()
    while True:
        report = assert_doctor_finds_nothing_orphaned(platform)
        if report["pending_deletions"] == 0:
            return time.monotonic() - started
        assert time.monotonic() - started < 60, f"deletes still waiting after 60 s: {report}"
        time.sleep(1.0)


def gauge(process: ServiceProcess, name: str) -> float:
    """The sum of a metric's samples on a service's Prometheus port."""
    values = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", process.metrics(), re.MULTILINE)
    assert values, f"{name} is missing from the metrics of {process.popen.args!r}"
    return sum(float(value) for value in values)


def calls_in_flight(platform: Platform) -> tuple[float, float]:
    """TTS's and ASR's RPCs in progress (the gateway's health watches among them: compare with an idle count)."""
    return gauge(platform.tts, "voice_grpc_in_flight"), gauge(platform.asr, "voice_grpc_in_flight")


def assert_work_stops(platform: Platform, idle: tuple[float, float]) -> None:
    """No call left running in TTS or ASR beyond the ``idle`` count: a call its client gave up on must not keep a
    model busy."""
    poll(lambda: gauge(platform.tts, "voice_tts_queue_depth") == 0, 15, "TTS still has requests")
    poll(lambda: calls_in_flight(platform) == idle, 15, f"calls still in flight (idle: {idle})")


def assert_unavailable_saying(
    platform: Platform, fault: str, error: grpc.RpcError, *words: str, since: float | None = None
) -> None:
    """UNAVAILABLE (what a client retries), with a message naming what failed and saying to retry. ``since``: when
    the fault began, to report how long the client waited for its answer."""
    waited = "" if since is None else f" ({time.monotonic() - since:.2f} s after the fault)"
    platform.answers[fault] = describe(error) + waited
    details = (error.details() or "").lower()
    assert error.code() == grpc.StatusCode.UNAVAILABLE, describe(error)
    assert all(word in details for word in words) and "retry" in details, describe(error)


# -- a client cancels, deadlines expire -----------------------------------------------------------------------------


def test_a_client_that_cancels_leaves_nothing_behind(platform: Platform) -> None:
    """An upload, a synthesis that would be stored and a live stream, each cancelled by its client midway."""
    samples, generations = sample_ids(platform), generation_ids(platform)
    idle = calls_in_flight(platform)
    wav = speech_wav(SENTENCES[2], "rms")
    halfway, never = threading.Event(), threading.Event()
    upload = platform.profiles_stub.AddSample.future(
        upload_requests(platform.profile_id, wav, halfway, never),
        metadata=platform.metadata,
        timeout=CALL_SECONDS,
    )
    assert halfway.wait(CALL_SECONDS)
    assert upload.cancel()
    assert upload.code() == grpc.StatusCode.CANCELLED, upload.details()
    never.set()

    synthesis = platform.tts_stub.SynthesizeStream(
        synthesis_request(platform, 2000, store=True), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    for _ in range(3):  # the start and some audio: generation is under way
        next(synthesis)
    synthesis.cancel()
    assert drained(synthesis).code() == grpc.StatusCode.CANCELLED

    started, stop_sending = threading.Event(), threading.Event()
    live = platform.asr_stub.StreamingTranscribe(
        live_requests(speech_pcm(), started, stop_sending), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    next(live)
    assert started.wait(CALL_SECONDS)
    live.cancel()
    stop_sending.set()
    assert drained(live).code() == grpc.StatusCode.CANCELLED

    assert_work_stops(platform, idle)
    platform.wait_until_serving()
    assert sample_ids(platform) == samples and generation_ids(platform) == generations
    assert_doctor_finds_nothing_orphaned(platform)
    synthesize_and_store(platform)  # the service is as it was


def test_deadlines_that_expire_end_the_calls_and_their_work(platform: Platform) -> None:
    """An upload whose client stalls, a long synthesis that would be stored and a live stream, each past its
    deadline: DEADLINE_EXCEEDED, the backends stop working on them, nothing is kept."""
    samples, generations = sample_ids(platform), generation_ids(platform)
    idle = calls_in_flight(platform)
    halfway, never = threading.Event(), threading.Event()
    stalled = platform.profiles_stub.AddSample.future(
        upload_requests(platform.profile_id, speech_wav(SENTENCES[2], "rms"), halfway, never),
        metadata=platform.metadata,
        timeout=3,
    )
    synthesis = platform.tts_stub.SynthesizeStream(
        synthesis_request(platform, 2000, store=True), metadata=platform.metadata, timeout=3
    )
    stop_sending = threading.Event()
    live = platform.asr_stub.StreamingTranscribe(
        live_requests(speech_pcm(), stop_sending=stop_sending), metadata=platform.metadata, timeout=3
    )
    try:
        for error in (failure_of(stalled), drained(synthesis), drained(live)):
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, describe(error)
            assert "deadline" in (error.details() or "").lower(), describe(error)
    finally:
        never.set()
        stop_sending.set()
    assert_work_stops(platform, idle)
    platform.wait_until_serving()
    assert sample_ids(platform) == samples and generation_ids(platform) == generations
    assert_doctor_finds_nothing_orphaned(platform)
    synthesize_and_store(platform)


# -- the object store stops -----------------------------------------------------------------------------------------


def restart_store_and_recover(platform: Platform, fault: str) -> None:
    """The store comes back on its port; the platform must serve again by itself, with no service restarted."""
    pids = (platform.profiles.pid, platform.tts.pid, platform.gateway.pid)
    # Both services that use the store notice it is gone (their health turns NOT_SERVING, the gateway mirrors it).
    platform.gateway.wait_for(NOT_SERVING, timeout=RECOVERY_SECONDS, service=PROFILE_SERVICE)
    platform.gateway.wait_for(NOT_SERVING, timeout=RECOVERY_SECONDS, service=TTS_SERVICE)
    platform.s3.start()
    back_at = time.monotonic()
    platform.wait_until_serving()
    add_sample(platform)
    synthesize_and_store(platform)
    platform.recoveries[fault] = round(time.monotonic() - back_at, 2)
    assert (platform.profiles.pid, platform.tts.pid, platform.gateway.pid) == pids


def test_the_object_store_stopping_during_an_upload(platform: Platform) -> None:
    samples = sample_ids(platform)
    halfway, resume = threading.Event(), threading.Event()
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(
            platform.profiles_stub.AddSample,
            upload_requests(platform.profile_id, speech_wav(SENTENCES[3], "awb"), halfway, resume),
            metadata=platform.metadata,
            timeout=CALL_SECONDS,
        )
        assert halfway.wait(CALL_SECONDS)
        platform.s3.stop(keep_objects=True)
        stopped_at = time.monotonic()
        resume.set()
        error = failure_of(upload)
    assert_unavailable_saying(
        platform, "object store stopped during an upload", error, "object store", since=stopped_at
    )
    restart_store_and_recover(platform, "object store stopped during an upload")
    assert len(sample_ids(platform) - samples) == 1  # the sample of the fresh call, not the failed one
    # The failed upload's undo could not delete (the store was down): its keys wait in the outbox, pending for
    # the doctor, until the sweeper deletes them.
    platform.recoveries["outbox emptied by the sweeper after the store returned"] = round(
        wait_until_the_outbox_is_empty(platform), 2
    )


def test_the_object_store_stopping_during_a_synthesis_that_stores_its_result(platform: Platform) -> None:
    generations = generation_ids(platform)
    # 64 s of audio (3 MB): far more than the HTTP/2 windows between TTS and the client hold (the gateway keeps
    # its window towards TTS at 64 KiB), so the client, by not reading, holds the synthesis back until the store is
    # down.
    synthesis = platform.tts_stub.SynthesizeStream(
        synthesis_request(platform, 800, store=True), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    next(synthesis)
    platform.s3.stop(keep_objects=True)
    stopped_at = time.monotonic()
    error = drained(synthesis)
    assert_unavailable_saying(
        platform, "object store stopped during a stored synthesis", error, "object store", since=stopped_at
    )
    restart_store_and_recover(platform, "object store stopped during a stored synthesis")
    assert len(generation_ids(platform) - generations) == 1  # the fresh call's
    assert_doctor_finds_nothing_orphaned(platform)


# -- PostgreSQL restarts --------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Clients calling through the gateway in a loop, each call with a deadline, every outcome kept: reads, and
    uploads into a profile of their own (two a second, well inside its 50 samples)."""

    platform: Platform
    upload_profile_id: str
    outcomes: list[tuple[float, grpc.StatusCode, str]] = field(default_factory=list)
    uploads: list[tuple[float, grpc.StatusCode, str]] = field(default_factory=list)
    running: threading.Event = field(default_factory=threading.Event)

    def upload(self) -> None:
        stub, metadata = self.platform.profiles_stub, self.platform.metadata
        wav = speech_wav(SENTENCES[4], "slt")
        while self.running.is_set():
            try:
                stub.AddSample(upload_requests(self.upload_profile_id, wav), metadata=metadata, timeout=10)
                self.uploads.append((time.monotonic(), grpc.StatusCode.OK, ""))
            except grpc.RpcError as error:
                self.uploads.append((time.monotonic(), error.code(), error.details() or ""))
            time.sleep(0.5)

    def run(self) -> None:
        stub, metadata = self.platform.profiles_stub, self.platform.metadata
        calls: list[Callable[[], Any]] = [
            lambda: stub.GetProfile(
                pb.GetProfileRequest(id=self.platform.profile_id), metadata=metadata, timeout=10
            ),
            lambda: stub.ListProfiles(pb.ListProfilesRequest(), metadata=metadata, timeout=10),
        ]
        while self.running.is_set():
            for call in calls:
                try:
                    call()
                    self.outcomes.append((time.monotonic(), grpc.StatusCode.OK, ""))
                except grpc.RpcError as error:
                    self.outcomes.append((time.monotonic(), error.code(), error.details() or ""))
            time.sleep(0.05)

    def failures_after(self, moment: float) -> list[tuple[float, grpc.StatusCode, str]]:
        return [
            outcome for outcome in self.outcomes if outcome[0] > moment and outcome[1] != grpc.StatusCode.OK
        ]

    def succeeded_after(self, moment: float) -> bool:
        return any(at > moment and code == grpc.StatusCode.OK for at, code, _ in self.outcomes)


def test_postgresql_restarting_under_traffic(platform: Platform) -> None:
    uploads_into = platform.profiles_stub.CreateProfile(
        pb.CreateProfileRequest(name="Traffic", language="en"), metadata=platform.metadata, timeout=10
    ).profile
    traffic = Traffic(platform, uploads_into.id)
    earlier_uploads = len(gateway_codes(platform, "ProfileService/AddSample"))
    traffic.running.set()
    workers = [threading.Thread(target=work, daemon=True) for work in (traffic.run, traffic.upload)]
    for worker in workers:
        worker.start()
    pids = (platform.profiles.pid, platform.tts.pid, platform.gateway.pid)
    restarted = False
    try:
        poll(
            lambda: traffic.succeeded_after(0) and bool(traffic.uploads),
            30,
            "the traffic does not get through",
        )
        stopped_at = time.monotonic()
        platform.postgres.stop("fast")
        poll(
            lambda: len(traffic.failures_after(stopped_at)) >= 4, 30, "no call failed with the database down"
        )
        # An upload while the database is down is refused before anything is written (its lease is a row).
        halted = upload_refusal(platform)
        assert_unavailable_saying(platform, "an upload while PostgreSQL is down", halted, "database")
        platform.gateway.wait_for(NOT_SERVING, timeout=RECOVERY_SECONDS, service=PROFILE_SERVICE)
        platform.postgres.start()
        restarted = True
        back_at = time.monotonic()
        poll(
            lambda: traffic.succeeded_after(back_at),
            RECOVERY_SECONDS,
            "the traffic does not get through again",
        )
        platform.recoveries["PostgreSQL restarted"] = round(time.monotonic() - back_at, 2)
        poll(
            lambda: any(at > back_at and code == grpc.StatusCode.OK for at, code, _ in traffic.uploads),
            RECOVERY_SECONDS,
            "the uploads do not get through again",
        )
    finally:
        if not restarted:
            platform.postgres.start()  # for the tests after this one
        traffic.running.clear()
        for worker in workers:
            worker.join(timeout=30)
    down = traffic.failures_after(stopped_at)
    platform.answers["first failed call after PostgreSQL stopped (s)"] = f"{down[0][0] - stopped_at:.2f}"
    platform.answers["calls while PostgreSQL is down"] = "; ".join(
        sorted({f"{code}: {details}" for _, code, details in down})
    )
    assert all(code == grpc.StatusCode.UNAVAILABLE for _, code, _ in down), down[:5]
    assert all("retry" in details.lower() for _, _, details in down), down[:5]
    assert any("database" in details.lower() for _, _, details in down), down[:5]
    # Uploads: refused with UNAVAILABLE, or the answer lost to grpc's client race (upload_refusal); what the
    # gateway answered them (its log) is only ever OK or UNAVAILABLE.
    failed_uploads = [(code, details) for _, code, details in traffic.uploads if code != grpc.StatusCode.OK]
    platform.answers["uploads while PostgreSQL restarted"] = "; ".join(
        sorted({f"{code}: {details}" for code, details in failed_uploads})
    )
    assert all(
        code == grpc.StatusCode.UNAVAILABLE
        or (code == grpc.StatusCode.INTERNAL and details == "Internal error from Core")
        for code, details in failed_uploads
    ), failed_uploads[:5]
    answered = gateway_codes(platform, "ProfileService/AddSample")[earlier_uploads:]
    assert set(answered) <= {"OK", "UNAVAILABLE"}, answered
    platform.wait_until_serving()
    add_sample(platform)
    synthesize_and_store(platform)
    assert (platform.profiles.pid, platform.tts.pid, platform.gateway.pid) == pids
    report = assert_doctor_finds_nothing_orphaned(platform)
    # An upload whose commit the restart cut off leaves its objects to its lease (pending, not orphaned).
    platform.answers["uploads during the restart (ok/failed); deletes pending after"] = (
        f"{len(traffic.uploads) - len(failed_uploads)}/{len(failed_uploads)}; {report['pending_deletions']}"
    )


# -- TTS and ASR die ------------------------------------------------------------------------------------------------


def test_the_tts_process_killed_mid_stream(platform: Platform) -> None:
    generations = generation_ids(platform)
    synthesis = platform.tts_stub.SynthesizeStream(
        synthesis_request(platform, 2000, store=True), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    for _ in range(3):
        next(synthesis)
    assert stop(platform.tts, signal.SIGKILL) == -signal.SIGKILL
    killed_at = time.monotonic()
    platform.tts.close()
    error = drained(synthesis)
    assert_unavailable_saying(platform, "TTS killed mid-stream", error, "tts", since=killed_at)
    platform.gateway.wait_for(NOT_SERVING, timeout=RECOVERY_SECONDS, service=TTS_SERVICE)
    refused = drained(
        platform.tts_stub.SynthesizeStream(
            synthesis_request(platform, 12, store=True), metadata=platform.metadata, timeout=CALL_SECONDS
        )
    )
    assert_unavailable_saying(platform, "a synthesis while TTS is down", refused, "tts")

    gateway_pid = platform.gateway.pid
    platform.start_tts()  # as the launcher (or Kubernetes) would
    platform.tts.wait_for(SERVING, timeout=START_SECONDS, service=TTS_SERVICE)
    back_at = time.monotonic()
    platform.wait_until_serving()
    synthesize_and_store(platform)
    platform.recoveries["TTS killed mid-stream (after its restart)"] = round(time.monotonic() - back_at, 2)
    assert platform.gateway.pid == gateway_pid
    assert len(generation_ids(platform) - generations) == 1  # the fresh call's
    assert_doctor_finds_nothing_orphaned(platform)


def test_the_asr_process_killed_during_a_live_stream(platform: Platform) -> None:
    started, stop_sending = threading.Event(), threading.Event()
    live = platform.asr_stub.StreamingTranscribe(
        live_requests(speech_pcm(), started, stop_sending), metadata=platform.metadata, timeout=CALL_SECONDS
    )
    try:
        next(live)
        assert started.wait(CALL_SECONDS)
        assert stop(platform.asr, signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()
        platform.asr.close()
        error = drained(live)
    finally:
        stop_sending.set()
    assert_unavailable_saying(platform, "ASR killed during a live stream", error, "asr", since=killed_at)
    platform.gateway.wait_for(NOT_SERVING, timeout=RECOVERY_SECONDS, service=ASR_SERVICE)

    gateway_pid = platform.gateway.pid
    platform.start_asr()
    platform.asr.wait_for(SERVING, timeout=START_SECONDS, service=ASR_SERVICE)
    back_at = time.monotonic()
    platform.wait_until_serving()
    assert "fox" in transcribe_live(platform).lower()
    platform.recoveries["ASR killed during a live stream (after its restart)"] = round(
        time.monotonic() - back_at, 2
    )
    assert platform.gateway.pid == gateway_pid
    assert_doctor_finds_nothing_orphaned(platform)
