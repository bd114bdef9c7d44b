"""The whole platform under mixed load for a bounded time: TTS streams, profile clients and live ASR streams at once,
every client going through the gateway.

Real processes on loopback, as deployed: the profile service on PostgreSQL + S3 (moto), migrated at start; the TTS
service on the tiny never-EOS model (:mod:`tools.tiny_model`, one math thread), its prompts in the same S3 bucket;
the ASR service on the default tiny.en (CPU, int8, one CTranslate2 thread); ``python -m voice_gateway`` in front
with API keys on and an internal token between them (:mod:`bench.services`, :mod:`bench.gateway`'s key, model and
voice). The key has rate limits far above the load (:func:`bench.gateway.create_key`): the gateway's per-key limits
are a separate matter, tested in the gateway's own tests, and must not refuse the load here.

For ``Plan.duration_s`` (60 s; ``--quick`` 15 s), from one asyncio process:

* ``Plan.tts_clients`` (64) clients each run SynthesizeStream calls back to back (a short text, ``tts_frames``
  frames of audio each), timing the first audio chunk. The TTS service admits ``TTS_MAX_QUEUE`` (32) requests
  waiting or running, ``TTS_MAX_BATCH`` (8) of them stepped together; a request beyond the queue gets
  RESOURCE_EXHAUSTED with a RetryInfo, which is the designed answer to more streams than the queue: the client
  counts it as *refused* (not an error) and waits the hinted delay before trying again.
* ``Plan.profile_clients`` (32) clients each create a profile, then loop GetProfile, ListProfiles, UpdateProfile
  (a description) with ``profile_pause_s`` between calls (people at a UI, not a closed loop that would take every
  core from the streams).
* ``Plan.asr_clients`` (8, the ASR service's ``ASR_MAX_STREAMS``) clients each hold one StreamingTranscribe call
  open for the whole duration, talking all along: recorded speech (``asr_sentences`` sentences of
  :mod:`voice_testing.speech`, repeated) as LINEAR16 16 kHz in 100 ms messages at real-time pace, interim results
  on. Final-result latency: the arrival of each final result minus the moment the client wrote the message holding
  the final's last audio (its ``end_seconds``). A service that falls behind real time recognises the backlog after
  the clients stop talking, within the drain.

At the end of the duration no client starts another call; calls in flight get ``drain_s`` to finish (an ASR client
half-closes at once and waits for its summary), after which they are cancelled and counted as errors. Any status
other than RESOURCE_EXHAUSTED-with-RetryInfo, a stream without audio or summary, or a wrong answer is an
*unexpected error*. Throughout, a thread samples the VmRSS of the gateway, profile, TTS and ASR processes
(``/proc/<pid>/status``) every ``sample_every_s``: peak, and growth as the median of the last third of the duration
minus the median of the first third. Afterwards every process must be alive and answer SERVING (directly, and
through the gateway's mirror of each backend).

Figures: ``load_unexpected_errors`` (== 0), ``load_rss_growth_max_mb`` (the largest process's growth),
``load_rss_peak_<process>_mb`` per process, ``load_processes_serving`` (all four, after the run),
``load_clients_served_ratio`` (every client completed at least one call: nobody starved), and the latencies with
goals for this 2-core machine under this load: ``load_tts_ttfa_p95_ms``, ``load_profile_call_p95_ms``,
``load_asr_final_latency_p95_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import asr as asr_bench
from bench.common import BenchError, Figure, format_value, median, render_table
from bench.gateway import KEY_STREAMS, Callers, build_model, create_key, make_voice, rss_mb
from bench.loadgen import percentile, process_cpu_seconds
from bench.services import (
    POSTGRES_S3,
    describe_rpc_error,
    gateway_service,
    profile_service,
    tts_service,
)
from bench.services import asr_service as start_asr_service
from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.asr.v1 import asr_service_pb2_grpc as asr_grpc
from voice.audio.v1 import audio_pb2 as audio_pb
from voice.profiles.v1 import profiles_service_pb2 as profiles_pb
from voice.profiles.v1 import profiles_service_pb2_grpc as profiles_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.audio.encoding import to_s16
from voice_common.internal_channel import INTERNAL_TOKEN_KEY
from voice_testing.speech import speak

TENANT = "bench-load"
TENANT_KEY = "x-voice-tenant"
SCOPES = ("profiles:read", "profiles:write", "tts", "asr")
LANGUAGE = "en"
TTS_TEXT = "Good morning! Thank you for calling, how can I help you today?"
SEED = 1234
TTS_THREADS = 1
ASR_THREADS = 1
ASR_RATE = asr_bench.SAMPLE_RATE
MESSAGE_S = asr_bench.MESSAGE_S
TTS_CALL_TIMEOUT_S = 300.0
PROFILE_CALL_TIMEOUT_S = 60.0
# A refusal's hint is honoured up to this long (a client would not wait longer for one call).
MAX_RETRY_WAIT_S = 30.0
# After an unexpected error a client waits this long before its next call, so a broken service is not hammered.
ERROR_PAUSE_S = 1.0
PROCESSES = ("gateway", "profiles", "tts", "asr")
# The public service each backend process serves, whose health the gateway mirrors.
MIRRORED = {
    "profiles": "voice.profiles.v1.ProfileService",
    "tts": "voice.tts.v1.TtsService",
    "asr": "voice.asr.v1.AsrService",
}

TTS = "tts"
PROFILES = "profiles"
ASR = "asr"

UNEXPECTED_GOAL = 0.0
RSS_GROWTH_GOAL_MB = 50.0
# Generous ceilings, about twice what the processes were seen to use on this load (see docs/testing.md).
RSS_PEAK_GOALS_MB = {"gateway": 250.0, "profiles": 400.0, "tts": 1500.0, "asr": 1000.0}
# Ceilings for a 2-core machine, not product targets: a TTS stream may wait behind TTS_MAX_QUEUE others.
TTFA_P95_GOAL_MS = 15_000.0
PROFILE_P95_GOAL_MS = 2_000.0
# Live captions later than this are of little use; 8 real-time streams need more CPU than two shared cores give.
ASR_FINAL_P95_GOAL_S = 5.0

FIGURE_NAMES = (
    "load_unexpected_errors",
    "load_rss_growth_max_mb",
    *(f"load_rss_peak_{name}_mb" for name in PROCESSES),
    "load_processes_serving",
    "load_clients_served_ratio",
    "load_tts_ttfa_p95_ms",
    "load_profile_call_p95_ms",
    "load_asr_final_latency_p95_s",
)


@dataclass
class Plan:
    tts_clients: int = 64
    profile_clients: int = 32
    asr_clients: int = 8
    duration_s: float = 60.0
    tts_frames: int = 24  # audio per stream: 24 codec frames = 1.92 s
    tts_max_queue: int = 32  # TTS_MAX_QUEUE: streams beyond it are refused with a retry hint
    tts_max_batch: int = 8  # TTS_MAX_BATCH
    asr_sentences: int = 4  # per recording (about 20 s), repeated for as long as the stream lasts
    profile_pause_s: float = 0.1
    # After the duration, for the calls in flight: live streams that fell behind real time catch up here (8 of them
    # on two shared cores fall minutes behind). A call still running after it counts as a hang.
    drain_s: float = 600.0
    sample_every_s: float = 0.5

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(duration_s=15.0) if quick else cls()

    @property
    def asr_max_streams(self) -> int:
        return self.asr_clients  # ASR_MAX_STREAMS: one per live client, so none is refused in steady state


@dataclass
class Tally:
    """What the clients of one kind saw."""

    clients: int = 0
    ok: int = 0  # completed calls (streams read to their summary)
    refused: Counter[str] = field(default_factory=Counter)  # RESOURCE_EXHAUSTED with RetryInfo, by reason
    retry_wait_s: float = 0.0  # honoured in all
    unexpected: Counter[str] = field(default_factory=Counter)  # "CODE: details" -> count
    served_clients: set[int] = field(default_factory=set)  # the clients with at least one completed call
    last_end_s: float = 0.0  # when the last call completed, seconds after the load started

    def completed(self, index: int, clock: Clock) -> None:
        self.ok += 1
        self.served_clients.add(index)
        self.last_end_s = max(self.last_end_s, time.perf_counter() - clock.started)

    def fail(self, reason: str) -> None:
        self.unexpected[reason[:160]] += 1


@dataclass
class TtsTally(Tally):
    ttfa_s: list[float] = field(default_factory=list)
    stream_s: list[float] = field(default_factory=list)
    audio_s: float = 0.0


@dataclass
class ProfileTally(Tally):
    latency_s: dict[str, list[float]] = field(default_factory=dict)  # method -> seconds


@dataclass
class AsrTally(Tally):
    final_latency_s: list[float] = field(default_factory=list)
    finals: int = 0
    interims: int = 0
    audio_s: float = 0.0  # as the summaries report it


@dataclass
class Memory:
    """VmRSS samples of each process: (seconds since the load started, MB)."""

    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    after_mb: dict[str, float] = field(default_factory=dict)  # once the load drained

    def peak_mb(self, name: str) -> float:
        return max((mb for _, mb in self.samples.get(name, [])), default=math.nan)

    def growth_mb(self, name: str, duration_s: float) -> tuple[float, float, float]:
        """(median of the first third of the duration, median of the last third, their difference)."""
        samples = self.samples.get(name, [])
        first = [mb for t, mb in samples if 0 <= t < duration_s / 3]
        last = [mb for t, mb in samples if 2 * duration_s / 3 <= t <= duration_s]
        early, late = median(first), median(last)
        return early, late, late - early


@dataclass
class LoadResult:
    plan: Plan
    tts: TtsTally = field(default_factory=TtsTally)
    profiles: ProfileTally = field(default_factory=ProfileTally)
    asr: AsrTally = field(default_factory=AsrTally)
    memory: Memory = field(default_factory=Memory)
    wall_s: float = 0.0  # from the first client's start to the last call's end (drain included)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # process -> % of one core during the duration
    health_after: dict[str, str] = field(default_factory=dict)  # process or mirrored service -> status
    alive_after: dict[str, bool] = field(default_factory=dict)
    cancelled_at_drain: int = 0

    @property
    def tallies(self) -> dict[str, Tally]:
        return {TTS: self.tts, PROFILES: self.profiles, ASR: self.asr}

    @property
    def unexpected_errors(self) -> int:
        """Failed calls and wrong answers, plus the clients still in a call when the drain ran out (hangs)."""
        return (
            sum(sum(tally.unexpected.values()) for tally in self.tallies.values()) + self.cancelled_at_drain
        )

    @property
    def refused(self) -> int:
        return sum(sum(tally.refused.values()) for tally in self.tallies.values())

    @property
    def serving_processes(self) -> int:
        """Processes alive and SERVING directly; a backend also SERVING through the gateway's mirror."""
        count = 0
        for name in PROCESSES:
            healthy = self.alive_after.get(name, False) and self.health_after.get(name) == "SERVING"
            if name in MIRRORED:
                healthy = healthy and self.health_after.get(f"gateway/{MIRRORED[name]}") == "SERVING"
            count += healthy
        return count

    def profile_latencies(self) -> list[float]:
        return sorted(s for values in self.profiles.latency_s.values() for s in values)

    def figures(self) -> list[Figure]:
        plan = self.plan
        errors = "; ".join(
            f"{kind}: {reason} x{count}"
            for kind, tally in self.tallies.items()
            for reason, count in tally.unexpected.most_common(3)
        )
        out = [
            Figure(
                FIGURE_NAMES[0],
                float(self.unexpected_errors),
                "<=",
                UNEXPECTED_GOAL,
                f"{plan.tts_clients} TTS + {plan.profile_clients} profile + {plan.asr_clients} ASR clients for "
                f"{format_value(plan.duration_s)} s through the gateway; refused with a retry hint (expected, "
                f"honoured): {self.refused}" + (f"; {errors}" if errors else ""),
            )
        ]
        growths = {name: self.memory.growth_mb(name, plan.duration_s) for name in PROCESSES}
        worst = max(PROCESSES, key=lambda name: _or(growths[name][2], -math.inf))
        out.append(
            Figure(
                FIGURE_NAMES[1],
                growths[worst][2],
                "<=",
                RSS_GROWTH_GOAL_MB,
                "VmRSS median of the last third minus the first third: "
                + ", ".join(f"{name} {growths[name][2]:+.1f} MB" for name in PROCESSES),
            )
        )
        for name in PROCESSES:
            out.append(
                Figure(
                    f"load_rss_peak_{name}_mb",
                    self.memory.peak_mb(name),
                    "<=",
                    RSS_PEAK_GOALS_MB[name],
                    f"{len(self.memory.samples.get(name, []))} samples; after the drain "
                    f"{self.memory.after_mb.get(name, math.nan):.1f} MB",
                )
            )
        out.append(
            Figure(
                "load_processes_serving",
                float(self.serving_processes),
                ">=",
                float(len(PROCESSES)),
                ", ".join(f"{name} {status}" for name, status in self.health_after.items()),
            )
        )
        clients = sum(tally.clients for tally in self.tallies.values())
        served = sum(len(tally.served_clients) for tally in self.tallies.values())
        out.append(
            Figure(
                "load_clients_served_ratio",
                served / clients if clients else math.nan,
                ">=",
                1.0,
                ", ".join(
                    f"{kind} {len(tally.served_clients)}/{tally.clients}"
                    for kind, tally in self.tallies.items()
                ),
            )
        )
        ttfa = sorted(self.tts.ttfa_s)
        out.append(
            Figure(
                "load_tts_ttfa_p95_ms",
                percentile(ttfa, 0.95) * 1e3,
                "<=",
                TTFA_P95_GOAL_MS,
                f"p50 {percentile(ttfa, 0.5) * 1e3:.0f} ms, p99 {percentile(ttfa, 0.99) * 1e3:.0f} ms over "
                f"{len(ttfa)} streams of {plan.tts_frames} frames; {self.tts.ok / plan.duration_s:.1f} streams/s, "
                f"{self.tts.audio_s / plan.duration_s:.1f} s of audio a second",
            )
        )
        calls = self.profile_latencies()
        out.append(
            Figure(
                "load_profile_call_p95_ms",
                percentile(calls, 0.95) * 1e3,
                "<=",
                PROFILE_P95_GOAL_MS,
                f"p50 {percentile(calls, 0.5) * 1e3:.1f} ms, p99 {percentile(calls, 0.99) * 1e3:.1f} ms over "
                f"{len(calls)} calls; {self.profiles.ok / plan.duration_s:.0f} calls/s",
            )
        )
        finals = sorted(self.asr.final_latency_s)
        out.append(
            Figure(
                "load_asr_final_latency_p95_s",
                percentile(finals, 0.95),
                "<=",
                ASR_FINAL_P95_GOAL_S,
                f"p50 {percentile(finals, 0.5):.2f} s, p99 {percentile(finals, 0.99):.2f} s over {len(finals)} "
                f"final results; {plan.asr_clients} streams at real-time pace for "
                f"{format_value(plan.duration_s)} s gave {self.asr.audio_s:.0f} s of audio, whose last final came "
                f"{self.asr.last_end_s:.0f} s after the start",
            )
        )
        return out


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def _ms(values: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return tuple(percentile(ordered, q) * 1e3 for q in (0.5, 0.95, 0.99))  # type: ignore[return-value]


def report(result: LoadResult) -> str:
    plan = result.plan
    rows: list[tuple[object, ...]] = []
    for kind, tally in result.tallies.items():
        rows.append(
            (
                kind,
                f"{len(tally.served_clients)}/{tally.clients}",
                tally.ok,
                f"{tally.ok / plan.duration_s:.1f}",
                sum(tally.refused.values()),
                f"{tally.retry_wait_s:.1f}",
                sum(tally.unexpected.values()),
            )
        )
    parts = [
        render_table(
            f"Load: {plan.tts_clients} TTS streams + {plan.profile_clients} profile clients + {plan.asr_clients} "
            f"live ASR streams through the gateway for {format_value(plan.duration_s)} s (PostgreSQL + S3 (moto), "
            f"TTS_MAX_QUEUE {plan.tts_max_queue}, TTS_MAX_BATCH {plan.tts_max_batch}, ASR_MAX_STREAMS "
            f"{plan.asr_max_streams}); wall {result.wall_s:.1f} s with the drain",
            ["clients", "served", "calls ok", "per s", "refused (retry hint)", "waited s", "unexpected"],
            rows,
        )
    ]
    latency_rows: list[tuple[object, ...]] = []
    tts = result.tts
    latency_rows.append(("TTS time to first audio", *_ms(tts.ttfa_s), len(tts.ttfa_s)))
    latency_rows.append(("TTS whole stream", *_ms(tts.stream_s), len(tts.stream_s)))
    for method, values in result.profiles.latency_s.items():
        latency_rows.append((f"profiles {method}", *_ms(values), len(values)))
    latency_rows.append(
        ("profiles, every call", *_ms(result.profile_latencies()), len(result.profile_latencies()))
    )
    latency_rows.append(
        ("ASR final result", *_ms(result.asr.final_latency_s), len(result.asr.final_latency_s))
    )
    parts.append(
        render_table(
            "Load: latency as the clients see it (ms)",
            ["", "p50", "p95", "p99", "count"],
            latency_rows,
        )
        + f"\n  TTS: {tts.audio_s:.1f} s of audio in {tts.ok} streams ({tts.audio_s / plan.duration_s:.1f} s a "
        f"second of the duration). ASR: {result.asr.audio_s:.1f} s of audio in {result.asr.ok} streams, "
        f"{result.asr.finals} finals, {result.asr.interims} interims, the last summary {result.asr.last_end_s:.0f} "
        "s after the start. Final latency: the final's arrival minus the write of the message holding its last "
        "audio."
    )
    memory_rows: list[tuple[object, ...]] = []
    for name in PROCESSES:
        early, late, growth = result.memory.growth_mb(name, plan.duration_s)
        memory_rows.append(
            (
                name,
                result.memory.samples[name][0][1] if result.memory.samples.get(name) else math.nan,
                result.memory.peak_mb(name),
                early,
                late,
                f"{growth:+.1f}",
                result.memory.after_mb.get(name, math.nan),
                f"{result.cpu_pct.get(name, math.nan):.0f}%",
                result.health_after.get(name, "?"),
            )
        )
    client_cpu = result.cpu_pct.get("clients (bench)", math.nan)
    memory_rows.append(("clients (bench)", "", "", "", "", "", "", f"{client_cpu:.0f}%", ""))
    parts.append(
        render_table(
            f"Load: VmRSS per process (MB), sampled every {format_value(plan.sample_every_s)} s; growth = median of "
            "the last third - median of the first third",
            [
                "process",
                "at start",
                "peak",
                "first third",
                "last third",
                "growth",
                "after",
                "CPU",
                "health after",
            ],
            memory_rows,
        )
        + f"\n  CPU: % of one core during the {format_value(plan.duration_s)} s of load (drain left out); the "
        f"machine has {os.cpu_count()} cores."
    )
    unexpected = [
        f"  {kind}: {reason} x{count}"
        for kind, tally in result.tallies.items()
        for reason, count in tally.unexpected.most_common(5)
    ]
    refused = [
        f"  {kind}: {reason} x{count}"
        for kind, tally in result.tallies.items()
        for reason, count in tally.refused.items()
    ]
    if refused:
        parts.append(
            "Refused with a retry hint (expected beyond the configured limits):\n" + "\n".join(refused)
        )
    if unexpected:
        parts.append("UNEXPECTED errors:\n" + "\n".join(unexpected))
    return "\n\n".join(parts)


# -- errors ------------------------------------------------------------------------------------------------------


def retry_delay_s(error: aio.AioRpcError) -> float | None:
    """The google.rpc RetryInfo delay of a RESOURCE_EXHAUSTED, or None (no hint: not the designed refusal)."""
    if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    trailing: Any = error.trailing_metadata() or ()
    for key, value in trailing:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToNanoseconds() / 1e9)
    return None


def _refusal_reason(error: aio.AioRpcError) -> str:
    details = error.details() or ""
    if "TTS queue is full" in details:
        return "TTS queue full (TTS_MAX_QUEUE)"
    if "live streams are running" in details:
        return "ASR live streams at ASR_MAX_STREAMS"
    if "API key" in details:
        return "gateway per-key limit"
    return details[:80]


class Clock:
    """The load's window: clients start calls until ``stop_at``; calls still running at ``cancel_at`` are cut."""

    def __init__(self, duration_s: float, drain_s: float) -> None:
        self.started = time.perf_counter()
        self.stop_at = self.started + duration_s
        self.cancel_at = self.stop_at + drain_s

    @property
    def running(self) -> bool:
        return time.perf_counter() < self.stop_at

    async def honour(self, tally: Tally, error: aio.AioRpcError) -> bool:
        """A refusal with a retry hint: count it, wait the hint (not past the window). False: not such a refusal."""
        delay = retry_delay_s(error)
        if delay is None:
            return False
        tally.refused[_refusal_reason(error)] += 1
        wait = min(delay, MAX_RETRY_WAIT_S, max(0.0, self.stop_at - time.perf_counter()))
        tally.retry_wait_s += wait
        await asyncio.sleep(wait)
        return True


# -- clients -----------------------------------------------------------------------------------------------------


async def _tts_client(
    index: int,
    stub: tts_grpc.TtsServiceStub,
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
    clock: Clock,
    tally: TtsTally,
) -> None:
    while clock.running:
        started = time.perf_counter()
        first_s: float | None = None
        audio_s: float | None = None
        try:
            async for response in stub.SynthesizeStream(
                request, metadata=metadata, timeout=TTS_CALL_TIMEOUT_S
            ):
                kind = response.WhichOneof("payload")
                if kind == "audio" and response.audio.data and first_s is None:
                    first_s = time.perf_counter() - started
                elif kind == "summary":
                    audio_s = response.summary.duration_seconds
        except aio.AioRpcError as error:
            if not await clock.honour(tally, error):
                tally.fail(describe_rpc_error(error))
                await asyncio.sleep(ERROR_PAUSE_S)
            continue
        if first_s is None or audio_s is None:
            tally.fail(f"SynthesizeStream ended without {'audio' if first_s is None else 'a summary'}")
            continue
        tally.completed(index, clock)
        tally.ttfa_s.append(first_s)
        tally.stream_s.append(time.perf_counter() - started)
        tally.audio_s += audio_s


async def _profile_client(
    index: int,
    stub: profiles_grpc.ProfileServiceStub,
    metadata: tuple[tuple[str, str], ...],
    clock: Clock,
    pause_s: float,
    tally: ProfileTally,
) -> None:
    """Creates a profile, then GetProfile, ListProfiles, UpdateProfile in turn, ``pause_s`` after each call."""
    profile_id = ""
    step = 0
    while clock.running:
        method = (
            "CreateProfile" if not profile_id else ("GetProfile", "ListProfiles", "UpdateProfile")[step % 3]
        )
        step += 1
        started = time.perf_counter()
        try:
            wrong = await _profile_call(stub, metadata, method, index, profile_id, step)
        except aio.AioRpcError as error:
            if not await clock.honour(tally, error):
                tally.fail(f"{method}: {describe_rpc_error(error)}")
                await asyncio.sleep(ERROR_PAUSE_S)
            continue
        if method == "CreateProfile":
            profile_id, wrong = wrong, ""
        if wrong:
            tally.fail(f"{method}: {wrong}")
        else:
            tally.latency_s.setdefault(method, []).append(time.perf_counter() - started)
            tally.completed(index, clock)
        await asyncio.sleep(pause_s)


async def _profile_call(
    stub: profiles_grpc.ProfileServiceStub,
    metadata: tuple[tuple[str, str], ...],
    method: str,
    index: int,
    profile_id: str,
    step: int,
) -> str:
    """One call; what was wrong with the answer ("" if nothing), or for CreateProfile the new profile's id."""
    timeout = PROFILE_CALL_TIMEOUT_S
    if method == "CreateProfile":
        created = await stub.CreateProfile(
            profiles_pb.CreateProfileRequest(
                name=f"load client {index} {uuid.uuid4().hex[:8]}", language=LANGUAGE
            ),
            metadata=metadata,
            timeout=timeout,
        )
        return str(created.profile.id)
    if method == "GetProfile":
        got = await stub.GetProfile(
            profiles_pb.GetProfileRequest(id=profile_id), metadata=metadata, timeout=timeout
        )
        return (
            "" if got.profile.id == profile_id else f"answered profile {got.profile.id!r} for {profile_id!r}"
        )
    if method == "ListProfiles":
        listed = await stub.ListProfiles(
            profiles_pb.ListProfilesRequest(page_size=20), metadata=metadata, timeout=timeout
        )
        return "" if listed.profiles else "answered no profile"
    description = f"update {step}"
    request = profiles_pb.UpdateProfileRequest(
        profile=profiles_pb.Profile(id=profile_id, description=description)
    )
    request.update_mask.paths.append("description")
    updated = await stub.UpdateProfile(request, metadata=metadata, timeout=timeout)
    return "" if updated.profile.description == description else "did not write the description"


@dataclass
class LiveStream:
    """What one StreamingTranscribe call brought back."""

    finals: list[tuple[float, float]] = field(default_factory=list)  # (arrival, the final's end_seconds)
    interims: int = 0
    summaries: list[float] = field(default_factory=list)  # duration_seconds of each summary
    sent_at: list[float] = field(default_factory=list)  # when each audio message was written

    async def receive(self, call: Any) -> None:
        async for response in call:
            if response.WhichOneof("payload") == "summary":
                self.summaries.append(response.summary.duration_seconds)
            elif response.result.is_final:
                self.finals.append((time.perf_counter(), response.result.end_seconds))
            else:
                self.interims += 1


async def _live_stream(
    stub: asr_grpc.AsrServiceStub,
    metadata: tuple[tuple[str, str], ...],
    config: asr_pb.StreamingConfig,
    pcm: bytes,
    clock: Clock,
) -> LiveStream:
    """``pcm`` (a whole number of 100 ms messages) over and over at real-time pace, until the window closes: one
    call talking for the whole duration; then the rest of the answers. Raises the call's error."""
    chunk = round(MESSAGE_S * ASR_RATE) * 2
    messages = [pcm[offset : offset + chunk] for offset in range(0, len(pcm), chunk)]
    stream = LiveStream()
    call = stub.StreamingTranscribe(metadata=metadata, timeout=clock.cancel_at - time.perf_counter() + 30)
    receiver = asyncio.ensure_future(stream.receive(call))
    try:
        try:
            await call.write(asr_pb.StreamingTranscribeRequest(config=config))
            started = time.perf_counter()
            for message in itertools.count():
                # At the end of the window the client stops talking: it half-closes and waits for the rest.
                if not clock.running or receiver.done():
                    break
                await call.write(asr_pb.StreamingTranscribeRequest(audio=messages[message % len(messages)]))
                stream.sent_at.append(time.perf_counter())
                delay = started + (message + 1) * MESSAGE_S - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the call already ended (a refusal, an error): the receiver raises its status
        await receiver
    finally:
        receiver.cancel()
    return stream


async def _asr_client(
    index: int,
    stub: asr_grpc.AsrServiceStub,
    metadata: tuple[tuple[str, str], ...],
    pcm: bytes,
    clock: Clock,
    tally: AsrTally,
) -> None:
    config = asr_pb.StreamingConfig(
        format=audio_pb.AudioFormat(encoding=audio_pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=ASR_RATE),
        interim_results=True,
    )
    while clock.running:
        try:
            stream = await _live_stream(stub, metadata, config, pcm, clock)
        except aio.AioRpcError as error:
            if not await clock.honour(tally, error):
                tally.fail(describe_rpc_error(error))
                await asyncio.sleep(ERROR_PAUSE_S)
            continue
        if len(stream.summaries) != 1:
            tally.fail(f"StreamingTranscribe sent {len(stream.summaries)} summaries")
            continue
        tally.completed(index, clock)
        tally.audio_s += stream.summaries[0]
        tally.finals += len(stream.finals)
        tally.interims += stream.interims
        sent_at = stream.sent_at
        for arrival, end_s in stream.finals:
            if sent_at:
                written = sent_at[min(len(sent_at) - 1, max(0, math.ceil(end_s / MESSAGE_S) - 1))]
                tally.final_latency_s.append(arrival - written)


# -- memory ------------------------------------------------------------------------------------------------------


class RssSampler:
    """A thread sampling the VmRSS of each process every ``every_s`` (the clients' event loop never delays it)."""

    def __init__(self, pids: dict[str, int], every_s: float, memory: Memory) -> None:
        self.pids = pids
        self.every_s = every_s
        self.memory = memory
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter() - self.started
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, BenchError):
                    self.memory.samples.setdefault(name, []).append((now, rss_mb(pid)))
            self._stop.wait(self.every_s)


# -- health ------------------------------------------------------------------------------------------------------


async def _health(address: str, service: str = "") -> str:
    async with aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
        except aio.AioRpcError as error:
            return describe_rpc_error(error)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


# -- the scenario ------------------------------------------------------------------------------------------------


async def run_load(workdir: Path, plan: Plan, progress: Callable[[str], None]) -> LoadResult:
    """Start the platform under ``workdir``, run the load of ``plan`` through the gateway, check health after."""
    if plan.tts_clients + plan.asr_clients > KEY_STREAMS:
        raise BenchError(f"more streaming clients than the key's stream limit ({KEY_STREAMS})")
    result = LoadResult(plan)
    token = secrets.token_urlsafe(32)
    progress(
        "load: building the tiny never-EOS model, reading the speech, starting PostgreSQL, S3 and services"
    )
    model_dir = workdir / "tiny-qwen3-tts-steady"
    model_built = asyncio.ensure_future(build_model(model_dir))
    recording_made = asyncio.ensure_future(
        asyncio.to_thread(
            asr_bench.make_recording,
            speak,
            plan.asr_sentences,
            asr_bench.STREAM_PAUSE_S,
            asr_bench.STREAM_LEAD_S,
        )
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            internal = {"VOICE_INTERNAL_TOKEN": token}
            profiles = await stack.enter_async_context(profile_service(POSTGRES_S3, workdir, internal))
            asr = await stack.enter_async_context(
                start_asr_service(
                    workdir, ASR_THREADS, {**internal, "ASR_MAX_STREAMS": str(plan.asr_max_streams)}
                )
            )
            key = await create_key(profiles, TENANT, SCOPES)
            callers = Callers(
                direct=((TENANT_KEY, TENANT), (INTERNAL_TOKEN_KEY, token)),
                gateway=(("authorization", f"Bearer {key}"),),
            )
            await model_built
            s3 = profiles.s3
            assert s3 is not None
            tts = await stack.enter_async_context(
                tts_service(
                    profiles,
                    workdir,
                    model_dir,
                    {
                        **internal,
                        "OMP_NUM_THREADS": str(TTS_THREADS),
                        "TTS_MAX_QUEUE": str(plan.tts_max_queue),
                        "TTS_MAX_BATCH": str(plan.tts_max_batch),
                        # The voice prompts in the same S3 bucket as the profiles' objects, as deployed.
                        "VOICE_S3_ENDPOINT": s3.endpoint,
                        "VOICE_S3_ACCESS_KEY": s3.access_key,
                        "VOICE_S3_SECRET_KEY": s3.secret_key,
                        "VOICE_S3_BUCKET": s3.bucket,
                    },
                )
            )
            gateway = await stack.enter_async_context(
                gateway_service(
                    {"profiles": profiles.address, "tts": tts.address, "asr": asr.address},
                    token,
                    {"GATEWAY_KEY_CACHE_SECONDS": "30"},
                )
            )
            processes = {
                "gateway": gateway.process,
                "profiles": profiles.process,
                "tts": tts.process,
                "asr": asr.process,
            }
            addresses = {
                "gateway": gateway.address,
                "profiles": profiles.address,
                "tts": tts.address,
                "asr": asr.address,
            }
            progress(
                "load: "
                + ", ".join(
                    f"{name} pid {process.pid} at {addresses[name]}" for name, process in processes.items()
                )
            )
            recording = await recording_made
            pcm = to_s16(recording.samples).tobytes()
            message_bytes = round(MESSAGE_S * ASR_RATE) * 2
            pcm += bytes(-len(pcm) % message_bytes)  # silence to a whole message, so the repeats stay in step
            async with (
                aio.insecure_channel(profiles.address) as profiles_channel,
                # Clients share a few connections, as the gateway's clients would be many; each its own HTTP/2.
                contextlib.AsyncExitStack() as channels,
            ):
                gateway_channels = [
                    await channels.enter_async_context(
                        aio.insecure_channel(gateway.address, options=[("grpc.use_local_subchannel_pool", 1)])
                    )
                    for _ in range(4)
                ]
                profile_id = await make_voice(profiles_grpc.ProfileServiceStub(profiles_channel), callers)
                request = tts_pb.SynthesizeStreamRequest(
                    config=tts_pb.SynthesisConfig(
                        voice=tts_pb.Voice(profile_id=profile_id),
                        language=LANGUAGE,
                        seed=SEED,
                        sampling=tts_pb.SamplingParameters(max_new_tokens=plan.tts_frames),
                    ),
                    text=TTS_TEXT,
                )
                progress("load: warming up (one TTS stream builds the voice prompt, one Transcribe)")
                await _warm_up(gateway_channels[0], callers.gateway, request, recording.wav())
                progress(
                    f"load: {plan.tts_clients} TTS + {plan.profile_clients} profile + {plan.asr_clients} ASR clients "
                    f"for {format_value(plan.duration_s)} s"
                )
                await _run_clients(gateway_channels, callers.gateway, request, pcm, processes, plan, result)
                await asyncio.sleep(2.0)
                for name, process in processes.items():
                    with contextlib.suppress(OSError, BenchError):
                        result.memory.after_mb[name] = rss_mb(process.pid)
                for name, process in processes.items():
                    result.alive_after[name] = process.alive
                    result.health_after[name] = await _health(addresses[name])
                for service in MIRRORED.values():
                    result.health_after[f"gateway/{service}"] = await _health(gateway.address, service)
    finally:
        for task in (model_built, recording_made):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return result


async def _warm_up(
    channel: aio.Channel,
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
    wav: bytes,
) -> None:
    try:
        async for _ in tts_grpc.TtsServiceStub(channel).SynthesizeStream(
            request, metadata=metadata, timeout=300
        ):
            pass
        await asr_grpc.AsrServiceStub(channel).Transcribe(
            asr_pb.TranscribeRequest(content=wav), metadata=metadata, timeout=300
        )
    except aio.AioRpcError as error:
        raise BenchError(f"the warm-up call failed: {describe_rpc_error(error)}") from error


async def _run_clients(
    channels: list[aio.Channel],
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
    pcm: bytes,
    processes: dict[str, Any],
    plan: Plan,
    result: LoadResult,
) -> None:
    pids = {name: process.pid for name, process in processes.items()}
    tts_stubs = [tts_grpc.TtsServiceStub(channel) for channel in channels]
    profile_stubs = [profiles_grpc.ProfileServiceStub(channel) for channel in channels]
    asr_stubs = [asr_grpc.AsrServiceStub(channel) for channel in channels]
    result.tts.clients, result.profiles.clients, result.asr.clients = (
        plan.tts_clients,
        plan.profile_clients,
        plan.asr_clients,
    )
    with RssSampler(pids, plan.sample_every_s, result.memory):
        clock = Clock(plan.duration_s, plan.drain_s)
        cpu = asyncio.ensure_future(_cpu_during(pids, clock, result))
        tasks = [
            *(
                asyncio.ensure_future(
                    _tts_client(i, tts_stubs[i % len(channels)], metadata, request, clock, result.tts)
                )
                for i in range(plan.tts_clients)
            ),
            *(
                asyncio.ensure_future(
                    _profile_client(
                        i,
                        profile_stubs[i % len(channels)],
                        metadata,
                        clock,
                        plan.profile_pause_s,
                        result.profiles,
                    )
                )
                for i in range(plan.profile_clients)
            ),
            *(
                asyncio.ensure_future(
                    _asr_client(i, asr_stubs[i % len(channels)], metadata, pcm, clock, result.asr)
                )
                for i in range(plan.asr_clients)
            ),
        ]
        _, pending = await asyncio.wait(tasks, timeout=clock.cancel_at - time.perf_counter())
        result.wall_s = time.perf_counter() - clock.started
        # A call still running after the drain is a hang as far as its client is concerned: cut it and count it.
        for task in pending:
            task.cancel()
        result.cancelled_at_drain = len(pending)
        if pending:
            await asyncio.wait(pending, timeout=10)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise BenchError(f"a load client failed: {type(error).__name__}: {error}") from error
    await cpu


async def _cpu_during(pids: dict[str, int], clock: Clock, result: LoadResult) -> None:
    """Each process's CPU from the start of the load to the end of its duration (the drain left out)."""
    before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    await asyncio.sleep(max(0.0, clock.stop_at - time.perf_counter()))
    seconds = time.perf_counter() - clock.started
    result.cpu_pct = {
        name: 100 * (process_cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()
    }
    result.cpu_pct["clients (bench)"] = 100 * (time.process_time() - client_before) / seconds
