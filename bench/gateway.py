"""The gateway against the services behind it: what forwarding adds to TTS's first audio, to GetProfile under
load and to a 5-minute upload, and the gateway's memory while slow clients read long streams.

Real processes on loopback, as deployed: the profile service (embedded SQLite + filesystem), the TTS service on the
tiny never-EOS model (:mod:`tools.tiny_model`, one math thread, as in :mod:`bench.tts`) and ``python -m
voice_gateway`` in front, API keys on (``GATEWAY_AUTHENTICATION=keys``) and an internal token
(``VOICE_INTERNAL_TOKEN``) between them. The key is made with the profile service's own ``ApiKeys.create`` on its
database, with rate limits far above the load (the gateway's defaults would refuse a benchmark's call rate). Direct
calls carry the internal token and ``x-voice-tenant`` themselves; gateway calls carry ``authorization: Bearer <key>``
and nothing else. The gateway's log level is the benchmarks' (WARNING unless ``BENCH_LOG_LEVEL``): its access log is
off, as it is for the services.

Figures:

* ``gateway_tts_ttfa_vs_direct_ratio`` / ``gateway_tts_ttfa_added_ms``: SynthesizeStream's time to the first audio
  chunk as the client sees it, through the gateway over direct (medians). Calls alternate in ABBA order (direct,
  gateway, gateway, direct, ...) so drift and any cost of going second fall on both sides alike.
* ``openai_speech_ttfa_vs_grpc_ratio`` / ``openai_speech_ttfa_added_ms``: the OpenAI-compatible HTTP face
  (``POST /v1/audio/speech``, ``stream_format=audio``, ``response_format=pcm``, ``model=tts-1``, the voice by id, the
  same key; httpx2, timed to the first body bytes) over SynthesizeStream on the gateway's gRPC port asking for the
  same audio (LINEAR16 at 24 kHz, the same voice and text, no seed or frame limit, as the HTTP face asks), ABBA,
  medians. The HTTP face is a gRPC client of the gateway itself, so the ratio is what the HTTP layer and its extra
  loopback hop add. Both sides stop reading (and cancel) after the first audio: an OpenAI request has no frame
  limit and the never-EOS model would speak for minutes; each HTTP call so opens a new connection, as a client
  that stops early must.
* ``speed_ttfa_vs_speed1_ratio``: SynthesizeStream through the gateway at ``speed`` 1.25 over speed 1 (the same
  request otherwise, ABBA, medians): what the streaming time-stretch adds before the first audio.
* ``gateway_get_profile_vs_direct_ops_ratio``: GetProfile ops/s with 32 concurrent clients (4 channels) through the
  gateway over direct; p50/p99 both ways in the table and the details. The clients are :mod:`bench.loadgen`, a
  process of its own (never the orchestrator's event loop), run alternately against each target; each side's figure
  is the median of its rounds. On two cores the client, the gateway and the profile service share the CPU, so the
  table shows each process's CPU over the whole round and per call, which says who the bottleneck was.
* ``gateway_add_sample_5min_vs_direct_ratio``: AddSample of the 5-minute 48 kHz WAV (:mod:`bench.upload`'s
  recording, 64 KiB chunks) through the gateway over direct, alternating, medians.
* Reference rows without a goal: the same GetProfile load and uploads through a *bare proxy* (``python -m
  bench.gateway --bare-proxy``: a grpc.aio generic handler that forwards bytes, no authentication, interceptor,
  metrics or header relay, the internal token put straight into the metadata), the floor of any Python grpc.aio
  hop, so the table separates what the gateway's own work costs from what the extra hop costs; and uploads in 1 MiB
  chunks (the hop's cost is per message).
* ``gateway_memory_growth_mb``: the gateway's VmRSS (``/proc/<pid>/status``) while 32 clients read long
  SynthesizeStream responses slowly (one message, then a sleep): the highest sample during the reads minus the
  sample just before they start; before/during/after (the streams cancelled by the clients) in the details. The TTS
  service runs with ``TTS_MAX_BATCH=32`` here so every stream produces audio at once, faster than its reader takes
  it: without end-to-end flow control the gateway would buffer the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx2
from grpc import aio

from bench import upload
from bench.common import (
    BenchError,
    Figure,
    ManagedProcess,
    child_environment,
    format_value,
    free_port,
    managed_process,
    median,
    python_module_argv,
    render_table,
)
from bench.get_profile_load import GET_PROFILE_METHOD, LoadPlan
from bench.loadgen import LoadResult, process_cpu_seconds, run_load
from bench.services import (
    FILESYSTEM,
    HOST,
    GatewayService,
    ProfileService,
    describe_rpc_error,
    gateway_service,
    profile_service,
    tts_service,
)
from bench.tts import long_text
from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as profiles_pb
from voice.profiles.v1 import profiles_service_pb2_grpc as profiles_grpc
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.internal_channel import INTERNAL_TOKEN_KEY
from voice_testing.media_files import encode_file, speechlike

TENANT = "bench-gateway"
LANGUAGE = "en"
SAMPLE_RATE = 24_000
REFERENCE_SECONDS = 4.0
REFERENCE_TEXT = "Hello, this is the reference voice the benchmark clones for every request."
SHORT_TEXT = "Good morning! This sentence goes through the gateway and straight to the service."
SEED = 1234
# Math threads of the TTS service (see bench.tts: two OpenMP threads per process on two cores hurt).
THREADS = int(os.environ.get("BENCH_TTS_THREADS", "1"))
SCOPES = ("profiles:read", "profiles:write", "tts")
# Far above anything the benchmark does: the gateway's default rate (50/s, burst 100) would refuse the load.
KEY_REQUESTS_PER_SECOND = 1_000_000.0
KEY_BURST = 1_000_000
KEY_STREAMS = 256
TENANT_KEY = "x-voice-tenant"

TTFA_RATIO_GOAL = 1.05
TTFA_ADDED_GOAL_MS = 5.0
OPS_RATIO_GOAL = 0.7
UPLOAD_RATIO_GOAL = 1.2
MEMORY_GROWTH_GOAL_MB = 50.0
# The HTTP face adds an HTTP request, its JSON and a second loopback gRPC hop (inside the gateway) to the first audio.
OPENAI_TTFA_RATIO_GOAL = 1.15
OPENAI_TTFA_ADDED_GOAL_MS = 10.0  # twice the gateway hop's own goal: one more hop, plus the HTTP request
SPEED_TTFA_RATIO_GOAL = 1.2  # one stretch of the first 0.32 s chunk (plus context) before it goes out
SPEED = 1.25
OPENAI_MODEL = "tts-1"
# Between calls of the OpenAI comparison: a call's first audio must not overlap the wind-down of the one before
# (20 ms apart, the HTTP side measured ~27 ms slower on 2 busy cores; 0.3 s apart, the same within a millisecond).
OPENAI_SETTLE_S = 0.3

DIRECT = "direct"
GATEWAY = "gateway"
PROXY = "bare proxy"
BIG_CHUNK_BYTES = 1024 * 1024

FIGURE_NAMES = (
    "gateway_tts_ttfa_vs_direct_ratio",
    "gateway_tts_ttfa_added_ms",
    "gateway_get_profile_vs_direct_ops_ratio",
    "gateway_add_sample_5min_vs_direct_ratio",
    "gateway_memory_growth_mb",
    "openai_speech_ttfa_vs_grpc_ratio",
    "openai_speech_ttfa_added_ms",
    "speed_ttfa_vs_speed1_ratio",
)
# The measurement each figure needs (``--only <figure>`` runs just that one).
TTFA, OPENAI, SPEED_TTFA, LOADS, UPLOADS, MEMORY = "ttfa", "openai", "speed", "loads", "uploads", "memory"
PART_OF = {
    FIGURE_NAMES[0]: TTFA,
    FIGURE_NAMES[1]: TTFA,
    FIGURE_NAMES[2]: LOADS,
    FIGURE_NAMES[3]: UPLOADS,
    FIGURE_NAMES[4]: MEMORY,
    FIGURE_NAMES[5]: OPENAI,
    FIGURE_NAMES[6]: OPENAI,
    FIGURE_NAMES[7]: SPEED_TTFA,
}
PARTS = frozenset(PART_OF.values())


@dataclass
class Plan:
    ttfa_pairs: int = 60  # direct + gateway calls each
    ttfa_frames: int = 8  # the first chunk comes after 4 frames; the rest only lengthens each run
    warmups: int = 3
    openai_pairs: int = 30  # HTTP + gRPC calls each
    speed_pairs: int = 30  # speed 1.25 + speed 1 calls each
    load: LoadPlan = field(default_factory=lambda: LoadPlan(warmup_s=2.0, duration_s=6.0))
    load_rounds: int = 2  # per path (direct, gateway, bare proxy), in turn
    upload_runs: int = 9  # per path, in turn, after one unmeasured round (outliers of a shared machine)
    slow_streams: int = 32
    slow_read_pause_s: float = 4.0  # several times slower than the backend produces (see fast_seconds)
    slow_seconds: float = 16.0
    slow_frames: int = 600  # per piece of the long text: 48 s of audio each, more than the reads take
    fast_seconds: float = 4.0  # the same streams read as fast as they come, for the producer's rate

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                ttfa_pairs=6,
                warmups=1,
                openai_pairs=6,
                speed_pairs=4,
                load=LoadPlan(warmup_s=0.5, duration_s=2.0),
                load_rounds=1,
                upload_runs=1,
                slow_seconds=5.0,
            )
        return cls()


@dataclass
class Ttfa:
    direct_s: list[float] = field(default_factory=list)
    gateway_s: list[float] = field(default_factory=list)
    same_audio: bool | None = None

    @property
    def paired_added_s(self) -> list[float]:
        return [g - d for d, g in zip(self.direct_s, self.gateway_s, strict=True)]


@dataclass
class Paired:
    """Seconds to first audio of two kinds of call made in ABBA order: ``first`` (the one measured) and ``base``."""

    first_s: list[float] = field(default_factory=list)
    base_s: list[float] = field(default_factory=list)
    first_bytes: int = 0  # audio bytes in the first chunk (the last call's), both sides
    base_bytes: int = 0

    @property
    def paired_added_s(self) -> list[float]:
        return [f - b for f, b in zip(self.first_s, self.base_s, strict=True)]

    def summary(self, first: str, base: str) -> str:
        return (
            f"{first} {median(self.first_s) * 1e3:.2f} ms vs {base} {median(self.base_s) * 1e3:.2f} ms, medians of "
            f"{len(self.first_s)} each, ABBA order; median of paired differences "
            f"{median(self.paired_added_s) * 1e3:.2f} ms; first chunk {self.first_bytes} vs {self.base_bytes} bytes"
        )


@dataclass
class LoadRound:
    result: LoadResult
    wall_s: float  # the whole loadgen run, warm-up and start-up included
    cpu_s: dict[str, float]  # process -> CPU seconds over wall_s


@dataclass
class Memory:
    before_mb: float = 0.0
    samples_mb: list[float] = field(default_factory=list)
    after_mb: float = 0.0
    messages_read: int = 0
    bytes_read: int = 0
    streams_open: int = 0  # streams that had sent audio when the reads stopped
    fast_messages_per_s: float = 0.0  # all streams together, read as fast as they come

    @property
    def during_mb(self) -> float:
        return max(self.samples_mb) if self.samples_mb else float("nan")


@dataclass
class GatewayResult:
    plan: Plan
    ttfa: Ttfa = field(default_factory=Ttfa)
    openai: Paired = field(default_factory=Paired)  # HTTP face (first) vs gRPC through the gateway (base)
    speed: Paired = field(default_factory=Paired)  # speed 1.25 (first) vs speed 1 (base), through the gateway
    loads: dict[str, list[LoadRound]] = field(default_factory=dict)  # path -> rounds
    uploads: dict[str, list[float]] = field(default_factory=dict)  # path (and chunk size) -> seconds
    recording: str = ""
    memory: Memory = field(default_factory=Memory)
    gateway_log: str = ""

    def figures(self) -> list[Figure]:
        out: list[Figure] = []
        if self.ttfa.direct_s and self.ttfa.gateway_s:
            direct = median(self.ttfa.direct_s)
            through = median(self.ttfa.gateway_s)
            details = (
                f"SynthesizeStream first audio through the gateway {through * 1e3:.2f} ms vs direct "
                f"{direct * 1e3:.2f} ms, medians of {len(self.ttfa.direct_s)} each, ABBA order; median of "
                f"paired differences {median(self.ttfa.paired_added_s) * 1e3:.2f} ms; same audio: "
                f"{'not compared' if self.ttfa.same_audio is None else 'yes' if self.ttfa.same_audio else 'NO'}"
            )
            out.append(Figure(FIGURE_NAMES[0], through / direct, "<=", TTFA_RATIO_GOAL, details))
            out.append(Figure(FIGURE_NAMES[1], (through - direct) * 1e3, "<=", TTFA_ADDED_GOAL_MS, details))
        openai = self.openai
        if openai.first_s and openai.base_s:
            http, grpc_s = median(openai.first_s), median(openai.base_s)
            details = openai.summary(
                "POST /v1/audio/speech (pcm) to the first body bytes",
                "SynthesizeStream (LINEAR16 24 kHz) through the gateway's gRPC port",
            )
            out.append(Figure(FIGURE_NAMES[5], http / grpc_s, "<=", OPENAI_TTFA_RATIO_GOAL, details))
            out.append(
                Figure(FIGURE_NAMES[6], (http - grpc_s) * 1e3, "<=", OPENAI_TTFA_ADDED_GOAL_MS, details)
            )
        speed = self.speed
        if speed.first_s and speed.base_s:
            details = speed.summary(
                f"SynthesizeStream through the gateway at speed {format_value(SPEED)}", "speed 1"
            )
            out.append(
                Figure(
                    FIGURE_NAMES[7],
                    median(speed.first_s) / median(speed.base_s),
                    "<=",
                    SPEED_TTFA_RATIO_GOAL,
                    details,
                )
            )
        if self.loads.get(DIRECT) and self.loads.get(GATEWAY):
            direct_ops = median([r.result.ops_per_s for r in self.loads[DIRECT]])
            gateway_ops = median([r.result.ops_per_s for r in self.loads[GATEWAY]])
            d50, d99 = _percentiles(self.loads[DIRECT])
            g50, g99 = _percentiles(self.loads[GATEWAY])
            out.append(
                Figure(
                    FIGURE_NAMES[2],
                    gateway_ops / direct_ops,
                    ">=",
                    OPS_RATIO_GOAL,
                    f"{gateway_ops:.0f} vs {direct_ops:.0f} ops/s, {self.plan.load.concurrency} clients; p50 "
                    f"{g50:.2f} vs {d50:.2f} ms, p99 {g99:.2f} vs {d99:.2f} ms (p99 added {g99 - d99:.2f} ms); "
                    f"medians of {len(self.loads[GATEWAY])} round(s) each",
                )
            )
        if self.uploads.get(DIRECT) and self.uploads.get(GATEWAY):
            direct = median(self.uploads[DIRECT])
            through = median(self.uploads[GATEWAY])
            out.append(
                Figure(
                    FIGURE_NAMES[3],
                    through / direct,
                    "<=",
                    UPLOAD_RATIO_GOAL,
                    f"AddSample through the gateway {through:.3f} s vs direct {direct:.3f} s, medians of "
                    f"{len(self.uploads[DIRECT])}, {upload.CHUNK_BYTES // 1024} KiB chunks; {self.recording}",
                )
            )
        memory = self.memory
        if memory.samples_mb:
            out.append(
                Figure(
                    FIGURE_NAMES[4],
                    memory.during_mb - memory.before_mb,
                    "<=",
                    MEMORY_GROWTH_GOAL_MB,
                    f"gateway VmRSS before {memory.before_mb:.1f} MB, during (max) {memory.during_mb:.1f} MB, "
                    f"after {memory.after_mb:.1f} MB; {self.plan.slow_streams} clients reading one message per "
                    f"{format_value(self.plan.slow_read_pause_s)} s for {format_value(self.plan.slow_seconds)} s "
                    f"({memory.messages_read / self.plan.slow_seconds:.1f} messages/s; the backend produces "
                    f"{memory.fast_messages_per_s:.1f}/s for fast readers)",
                )
            )
        return out


def _percentiles(rounds: list[LoadRound]) -> tuple[float, float]:
    return median([r.result.p50_ms for r in rounds]), median([r.result.p99_ms for r in rounds])


def report(result: GatewayResult) -> str:
    parts: list[str] = []
    ttfa = result.ttfa
    if ttfa.direct_s:
        rows: list[tuple[object, ...]] = []
        for label, values in (
            ("direct (internal token)", ttfa.direct_s),
            ("through the gateway (API key)", ttfa.gateway_s),
            ("gateway - direct, paired", ttfa.paired_added_s),
        ):
            ordered = sorted(values)
            rows.append(
                (
                    label,
                    median(values) * 1e3,
                    ordered[0] * 1e3,
                    ordered[len(ordered) // 4] * 1e3,
                    ordered[(3 * len(ordered)) // 4] * 1e3,
                    ordered[-1] * 1e3,
                    len(values),
                )
            )
        parts.append(
            render_table(
                f"Gateway: SynthesizeStream time to first audio ({result.plan.ttfa_frames} frames, tiny never-EOS "
                f"model, {THREADS} math thread(s)), ABBA order",
                ["calls", "median ms", "min ms", "p25 ms", "p75 ms", "max ms", "runs"],
                rows,
            )
        )
    for paired, title, first, base in (
        (
            result.openai,
            "OpenAI face: POST /v1/audio/speech (pcm, stream_format audio) to the first body bytes vs "
            "SynthesizeStream (LINEAR16 24 kHz) through the gateway's gRPC port, cancelled after the first audio",
            "HTTP face (httpx2)",
            "gRPC through the gateway",
        ),
        (
            result.speed,
            f"Speed: SynthesizeStream first audio through the gateway at speed {format_value(SPEED)} vs 1 "
            f"({result.plan.ttfa_frames} frames)",
            f"speed {format_value(SPEED)}",
            "speed 1",
        ),
    ):
        if paired.first_s:
            parts.append(
                render_table(
                    f"{title}, ABBA order",
                    ["calls", "median ms", "min ms", "p25 ms", "p75 ms", "max ms", "runs"],
                    [
                        _spread_row(first, paired.first_s),
                        _spread_row(base, paired.base_s),
                        _spread_row(f"{first} - {base}, paired", paired.paired_added_s),
                    ],
                )
            )
    if result.loads:
        rows = []
        for label, rounds in result.loads.items():
            for index, r in enumerate(rounds):
                res = r.result
                # Calls in the whole round, estimated from the measured window's rate (warm-up at the same rate).
                total_calls = res.ok * (res.warmup_s + res.duration_s) / res.duration_s
                cpu = "  ".join(
                    f"{name} {100 * seconds / r.wall_s:.0f}% ({1e6 * seconds / total_calls:.0f} us/call)"
                    for name, seconds in r.cpu_s.items()
                )
                errors = sum(res.errors.values()) + res.mismatches
                rows.append(
                    (
                        f"{label} #{index + 1}",
                        round(res.ops_per_s),
                        res.p50_ms,
                        res.p90_ms,
                        res.p99_ms,
                        res.max_ms,
                        errors,
                        f"{res.client_cpu_pct:.0f}%",
                        cpu,
                    )
                )
        load_plan = result.plan.load
        parts.append(
            render_table(
                f"Gateway: GetProfile, {load_plan.concurrency} concurrent clients over {load_plan.channels} "
                f"channels (bench.loadgen, its own process), {format_value(load_plan.warmup_s)} s warm-up + "
                f"{format_value(load_plan.duration_s)} s measured per round, paths in turn",
                [
                    "round",
                    "ops/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                    "client CPU",
                    "CPU by process",
                ],
                rows,
            )
            + f"\n  CPU by process: % of one core over the whole round (start-up and warm-up included) and per "
            f"call (estimated calls in the round); the machine has {os.cpu_count()} cores. {PROXY}: forwarding "
            "alone (no goal), the floor of a Python grpc.aio hop."
        )
    if result.uploads:
        direct = median(result.uploads.get(DIRECT, [float("nan")]))
        upload_rows = [
            (path, median(times), median(times) / direct, " ".join(f"{v:.3f}" for v in times))
            for path, times in result.uploads.items()
        ]
        parts.append(
            render_table(
                f"Gateway: AddSample in {upload.CHUNK_BYTES // 1024} KiB chunks unless said, {result.recording}; "
                "paths in turn",
                ["path", "median s", "vs direct", "runs s"],
                upload_rows,
            )
        )
    memory = result.memory
    if memory.samples_mb:
        plan = result.plan
        text = (
            f"Gateway memory (VmRSS): {plan.slow_streams} SynthesizeStream clients through the gateway, each reading "
            f"one message every {format_value(plan.slow_read_pause_s)} s for {format_value(plan.slow_seconds)} s, "
            f"then cancelling\n"
            f"  before {memory.before_mb:.1f} MB, during min {min(memory.samples_mb):.1f} / max "
            f"{memory.during_mb:.1f} MB ({len(memory.samples_mb)} samples), after {memory.after_mb:.1f} MB; "
            f"{memory.streams_open} streams had audio, {memory.messages_read} messages "
            f"({memory.bytes_read / 1e6:.1f} MB) read in all, "
            f"{memory.messages_read / plan.slow_seconds:.1f} messages/s; read as fast as they come (after the "
            f"figure) the same streams gave {memory.fast_messages_per_s:.1f} messages/s"
        )
        parts.append(text)
    if result.gateway_log.strip():
        log = "\n".join(f"      | {line}" for line in result.gateway_log.strip().splitlines()[-20:])
        parts.append(f"  gateway output (last lines):\n{log}")
    return "\n\n".join(parts)


def _spread_row(label: str, seconds: list[float]) -> tuple[object, ...]:
    ordered = sorted(seconds)
    quartiles = (ordered[0], ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4], ordered[-1])
    return (label, median(seconds) * 1e3, *(value * 1e3 for value in quartiles), len(seconds))


def rss_mb(pid: int) -> float:
    """VmRSS of a process from /proc, in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise BenchError(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class Callers:
    """The metadata of a direct call (internal token + tenant) and of a gateway call (the key)."""

    direct: tuple[tuple[str, str], ...]
    gateway: tuple[tuple[str, str], ...]


async def create_key(profiles: ProfileService, tenant: str = TENANT, scopes: tuple[str, ...] = SCOPES) -> str:
    """An API key of ``tenant`` with ``scopes`` and rate limits far above any benchmark's load, made on the profile
    service's database (also :mod:`bench.load`'s)."""
    from voice_profiles.app import ProfilesApp
    from voice_profiles.domain.api_keys import RateLimits
    from voice_profiles.settings import ProfilesSettings

    app = await ProfilesApp.open(
        profiles.common_settings(), ProfilesSettings(port=0, metrics_port=0), migrate=False
    )
    try:
        created = await app.api_keys.create(
            tenant, "bench", scopes, RateLimits(KEY_REQUESTS_PER_SECOND, KEY_BURST, KEY_STREAMS)
        )
    finally:
        await app.close()
    return created.secret


async def build_model(directory: Path) -> None:
    """The tiny never-EOS model, built in a child process (torch stays out of the clients' process)."""
    process = await asyncio.create_subprocess_exec(
        *python_module_argv("tools.tiny_model", "--output", str(directory), "--never-eos"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"building the tiny model failed ({process.returncode}):\n{output.decode()[-4000:]}")


async def run_gateway(
    workdir: Path, plan: Plan, progress: Callable[[str], None], parts: frozenset[str] = PARTS
) -> GatewayResult:
    """The gateway measurements of ``parts`` (:data:`PART_OF`; see the module docstring), with its own services
    under ``workdir``."""
    result = GatewayResult(plan)
    token = secrets.token_urlsafe(32)
    progress(f"gateway ({', '.join(sorted(parts))}): building the tiny never-EOS model, starting services")
    model_dir = workdir / "tiny-qwen3-tts-steady"
    model_built = asyncio.ensure_future(build_model(model_dir))
    recording_made = asyncio.ensure_future(
        asyncio.to_thread(upload.make_recording) if UPLOADS in parts else asyncio.sleep(0, None)
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            profiles = await stack.enter_async_context(
                profile_service(FILESYSTEM, workdir, {"VOICE_INTERNAL_TOKEN": token})
            )
            key = await create_key(profiles)
            callers = Callers(
                direct=((TENANT_KEY, TENANT), (INTERNAL_TOKEN_KEY, token)),
                gateway=(("authorization", f"Bearer {key}"),),
            )
            await model_built
            tts = await stack.enter_async_context(
                tts_service(
                    profiles,
                    workdir,
                    model_dir,
                    {
                        "OMP_NUM_THREADS": str(THREADS),
                        "VOICE_INTERNAL_TOKEN": token,
                        "TTS_MAX_BATCH": str(plan.slow_streams),
                        "TTS_MAX_QUEUE": str(plan.slow_streams + 8),
                    },
                )
            )
            gateway = await stack.enter_async_context(
                gateway_service({"profiles": profiles.address, "tts": tts.address}, token)
            )
            progress(
                f"gateway SERVING at {gateway.address} (pid {gateway.process.pid}) in front of profiles "
                f"{profiles.address} and TTS {tts.address}"
            )
            # The bare proxy is only the GetProfile and upload baseline.
            proxy: BareProxy | None = None
            if LOADS in parts or UPLOADS in parts:
                proxy = await stack.enter_async_context(bare_proxy(profiles.address, token))
            proxy_address = (
                proxy.address if proxy is not None else gateway.address
            )  # unused without the proxy
            mark = gateway.process.mark()
            async with (
                aio.insecure_channel(profiles.address, options=upload.CHANNEL_OPTIONS) as profiles_channel,
                aio.insecure_channel(tts.address) as tts_channel,
                aio.insecure_channel(gateway.address, options=upload.CHANNEL_OPTIONS) as gateway_channel,
                aio.insecure_channel(proxy_address, options=upload.CHANNEL_OPTIONS) as proxy_channel,
                httpx2.AsyncClient(timeout=120) as http,
            ):
                profile_id = await make_voice(profiles_grpc.ProfileServiceStub(profiles_channel), callers)
                if TTFA in parts:
                    progress(
                        f"gateway: time to first audio, {plan.ttfa_pairs} direct and gateway calls, ABBA"
                    )
                    result.ttfa = await _ttfa(
                        tts_grpc.TtsServiceStub(tts_channel),
                        tts_grpc.TtsServiceStub(gateway_channel),
                        callers,
                        profile_id,
                        plan,
                    )
                if OPENAI in parts:
                    progress(
                        f"gateway: OpenAI speech vs gRPC first audio, {plan.openai_pairs} calls each, ABBA"
                    )
                    result.openai = await _openai_ttfa(
                        tts_grpc.TtsServiceStub(gateway_channel),
                        http,
                        gateway.http_url,
                        callers,
                        profile_id,
                        plan,
                    )
                if SPEED_TTFA in parts:
                    progress(
                        f"gateway: first audio at speed {SPEED} vs 1, {plan.speed_pairs} calls each, ABBA"
                    )
                    result.speed = await _speed_ttfa(
                        tts_grpc.TtsServiceStub(gateway_channel), callers, profile_id, plan
                    )
                if parts & {LOADS, UPLOADS, MEMORY}:
                    await _loads_uploads_memory(
                        parts,
                        profiles,
                        tts.process.pid,
                        gateway,
                        proxy,
                        profiles_channel,
                        gateway_channel,
                        proxy_channel,
                        callers,
                        profile_id,
                        recording_made,
                        result,
                        plan,
                        progress,
                    )
            gateway.process.check_alive("after the gateway benchmarks")
            tts.process.check_alive("after the gateway benchmarks")
            profiles.process.check_alive("after the gateway benchmarks")
            result.gateway_log = gateway.process.output_since(mark)
    finally:
        for task in (model_built, recording_made):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    return result


async def _loads_uploads_memory(
    parts: frozenset[str],
    profiles: ProfileService,
    tts_pid: int,
    gateway: GatewayService,
    proxy: BareProxy | None,
    profiles_channel: aio.Channel,
    gateway_channel: aio.Channel,
    proxy_channel: aio.Channel,
    callers: Callers,
    profile_id: str,
    recording_made: asyncio.Future[upload.Recording | None],
    result: GatewayResult,
    plan: Plan,
    progress: Callable[[str], None],
) -> None:
    """The GetProfile loads, the uploads and the memory figure (those of ``parts``), after the first-audio ones."""
    if LOADS in parts:
        progress(
            f"gateway: GetProfile load, {plan.load_rounds} round(s) per path (direct, gateway, bare proxy)"
        )
        assert proxy is not None
        targets = {
            DIRECT: (profiles.address, callers.direct, profiles.process.pid),
            GATEWAY: (gateway.address, callers.gateway, gateway.process.pid),
            PROXY: (proxy.address, callers.gateway, proxy.process.pid),
        }
        await _loads(profiles, targets, tts_pid, callers, result, plan)
    if UPLOADS in parts:
        recording = await recording_made
        assert recording is not None
        result.recording = recording.description
        progress(f"gateway: AddSample of the recording, {plan.upload_runs} run(s) per path")
        direct_stub = profiles_grpc.ProfileServiceStub(profiles_channel)
        gateway_stub = profiles_grpc.ProfileServiceStub(gateway_channel)
        paths = [
            UploadPath(DIRECT, direct_stub, callers.direct, upload.CHUNK_BYTES),
            UploadPath(GATEWAY, gateway_stub, callers.gateway, upload.CHUNK_BYTES),
            UploadPath(
                PROXY, profiles_grpc.ProfileServiceStub(proxy_channel), callers.gateway, upload.CHUNK_BYTES
            ),
            UploadPath(f"{DIRECT}, 1 MiB chunks", direct_stub, callers.direct, BIG_CHUNK_BYTES),
            UploadPath(f"{GATEWAY}, 1 MiB chunks", gateway_stub, callers.gateway, BIG_CHUNK_BYTES),
        ]
        await _uploads(direct_stub, paths, callers, recording.data, result, plan)
    if MEMORY in parts:
        progress(f"gateway: memory while {plan.slow_streams} clients read long streams slowly")
        result.memory = await _memory(
            tts_grpc.TtsServiceStub(gateway_channel), gateway, callers, profile_id, plan
        )


async def make_voice(stub: profiles_grpc.ProfileServiceStub, callers: Callers) -> str:
    """A profile with one 4 s, 24 kHz sample and its transcript (direct); returns its id."""
    wav = encode_file(speechlike(REFERENCE_SECONDS, rate=SAMPLE_RATE, seed=3), SAMPLE_RATE, "wav")
    try:
        created = await stub.CreateProfile(
            profiles_pb.CreateProfileRequest(name=f"bench gateway {uuid.uuid4().hex[:8]}", language=LANGUAGE),
            metadata=callers.direct,
            timeout=60,
        )
        await stub.AddSample(
            _sample_requests(created.profile.id, wav, REFERENCE_TEXT), metadata=callers.direct, timeout=60
        )
    except aio.AioRpcError as error:
        raise BenchError(f"making the voice failed: {describe_rpc_error(error)}") from error
    return str(created.profile.id)


async def _sample_requests(
    profile_id: str, data: bytes, reference_text: str, chunk_bytes: int = upload.CHUNK_BYTES
) -> AsyncIterator[profiles_pb.AddSampleRequest]:
    metadata = profiles_pb.SampleMetadata(
        profile_id=profile_id, reference_text=reference_text, file_name="sample.wav", mime_type="audio/wav"
    )
    yield profiles_pb.AddSampleRequest(metadata=metadata)
    view = memoryview(data)
    for start in range(0, len(data), chunk_bytes):
        yield profiles_pb.AddSampleRequest(chunk=bytes(view[start : start + chunk_bytes]))


def _stream_request(profile_id: str, text: str, frames: int) -> tts_pb.SynthesizeStreamRequest:
    config = tts_pb.SynthesisConfig(
        voice=tts_pb.Voice(profile_id=profile_id),
        language=LANGUAGE,
        seed=SEED,
        sampling=tts_pb.SamplingParameters(max_new_tokens=frames),
    )
    return tts_pb.SynthesizeStreamRequest(config=config, text=text)


async def _first_audio(
    stub: tts_grpc.TtsServiceStub,
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
) -> tuple[float, bytes]:
    """Seconds to the first audio chunk of one SynthesizeStream, and all its audio (read to the end)."""
    first_s: float | None = None
    parts: list[bytes] = []
    started = time.perf_counter()
    try:
        async for response in stub.SynthesizeStream(request, metadata=metadata, timeout=120):
            if response.WhichOneof("payload") == "audio" and response.audio.data:
                if first_s is None:
                    first_s = time.perf_counter() - started
                parts.append(response.audio.data)
    except aio.AioRpcError as error:
        raise BenchError(f"SynthesizeStream failed: {describe_rpc_error(error)}") from error
    if first_s is None:
        raise BenchError("SynthesizeStream sent no audio")
    return first_s, b"".join(parts)


async def _ttfa(
    direct: tts_grpc.TtsServiceStub,
    through: tts_grpc.TtsServiceStub,
    callers: Callers,
    profile_id: str,
    plan: Plan,
) -> Ttfa:
    request = _stream_request(profile_id, SHORT_TEXT, plan.ttfa_frames)
    for _ in range(plan.warmups):
        await _first_audio(direct, callers.direct, request)
        await _first_audio(through, callers.gateway, request)
    ttfa = Ttfa()
    audio: dict[str, bytes] = {}
    for index in range(plan.ttfa_pairs):
        order = (("direct", direct), ("gateway", through))
        for name, stub in order if index % 2 == 0 else reversed(order):
            seconds, data = await _first_audio(
                stub, callers.direct if name == "direct" else callers.gateway, request
            )
            (ttfa.direct_s if name == "direct" else ttfa.gateway_s).append(seconds)
            audio.setdefault(name, data)
    ttfa.same_audio = audio["direct"] == audio["gateway"]
    return ttfa


async def _first_chunk(
    stub: tts_grpc.TtsServiceStub,
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
    *,
    read_all: bool,
) -> tuple[float, int]:
    """Seconds to the first audio chunk of one SynthesizeStream and that chunk's bytes; then the rest is read
    (``read_all``) or the call cancelled."""
    started = time.perf_counter()
    call = stub.SynthesizeStream(request, metadata=metadata, timeout=120)
    first: tuple[float, int] | None = None
    try:
        async for response in call:
            if first is None and response.WhichOneof("payload") == "audio" and response.audio.data:
                first = (time.perf_counter() - started, len(response.audio.data))
                if not read_all:
                    break
    except aio.AioRpcError as error:
        raise BenchError(f"SynthesizeStream failed: {describe_rpc_error(error)}") from error
    finally:
        call.cancel()  # after the end this does nothing
    if first is None:
        raise BenchError("SynthesizeStream sent no audio")
    return first


async def _http_first_chunk(
    http: httpx2.AsyncClient, url: str, headers: dict[str, str], body: dict[str, object]
) -> tuple[float, int]:
    """Seconds to the first body bytes of one streamed ``POST /v1/audio/speech`` and their count; then the
    response is closed (the connection with it), which cancels the synthesis."""
    started = time.perf_counter()
    async with http.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", "replace")[:1000]
            raise BenchError(f"POST {url} answered {response.status_code}: {text}")
        async for chunk in response.aiter_raw():
            if chunk:
                return time.perf_counter() - started, len(chunk)
    raise BenchError(f"POST {url} sent no audio")


async def _abba(
    first: Callable[[], Awaitable[tuple[float, int]]],
    base: Callable[[], Awaitable[tuple[float, int]]],
    pairs: int,
    warmups: int,
    settle_s: float = 0.0,
) -> Paired:
    """``warmups`` unmeasured calls of each, then ``pairs`` of each in ABBA order (base, first, first, base, ...);
    ``settle_s`` after every call."""
    for _ in range(warmups):
        for call in (base, first):
            await call()
            await asyncio.sleep(settle_s)
    paired = Paired()
    order = ((False, base), (True, first))
    for index in range(pairs):
        for is_first, call in order if index % 2 == 0 else reversed(order):
            seconds, size = await call()
            if is_first:
                paired.first_s.append(seconds)
                paired.first_bytes = size
            else:
                paired.base_s.append(seconds)
                paired.base_bytes = size
            await asyncio.sleep(settle_s)
    return paired


async def _openai_ttfa(
    through: tts_grpc.TtsServiceStub,
    http: httpx2.AsyncClient,
    http_url: str,
    callers: Callers,
    profile_id: str,
    plan: Plan,
) -> Paired:
    """The HTTP face's speech (pcm) against the gRPC request the face itself makes for it: LINEAR16 at 24 kHz,
    speed 1, no seed, language or frame limit; both cancelled after the first audio (see the module docstring)."""
    if not http_url:
        raise BenchError("the gateway was started without its HTTP face")
    config = tts_pb.SynthesisConfig(
        voice=tts_pb.Voice(profile_id=profile_id),
        sampling=tts_pb.SamplingParameters(),
        output_format=audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=SAMPLE_RATE
        ),
        speed=1.0,
    )
    request = tts_pb.SynthesizeStreamRequest(config=config, text=SHORT_TEXT)
    body: dict[str, object] = {
        "model": OPENAI_MODEL,
        "input": SHORT_TEXT,
        "voice": profile_id,
        "response_format": "pcm",
        "stream_format": "audio",
    }
    url = f"{http_url}/audio/speech"
    headers = dict(callers.gateway)

    async def over_http() -> tuple[float, int]:
        return await _http_first_chunk(http, url, headers, body)

    async def over_grpc() -> tuple[float, int]:
        return await _first_chunk(through, callers.gateway, request, read_all=False)

    return await _abba(over_http, over_grpc, plan.openai_pairs, plan.warmups, OPENAI_SETTLE_S)


async def _speed_ttfa(
    through: tts_grpc.TtsServiceStub, callers: Callers, profile_id: str, plan: Plan
) -> Paired:
    """SynthesizeStream at ``SPEED`` against speed 1, otherwise the request of the gateway's own first-audio figure
    (``plan.ttfa_frames`` frames, read to the end)."""
    normal = _stream_request(profile_id, SHORT_TEXT, plan.ttfa_frames)
    faster = _stream_request(profile_id, SHORT_TEXT, plan.ttfa_frames)
    faster.config.speed = SPEED

    async def at_speed() -> tuple[float, int]:
        return await _first_chunk(through, callers.gateway, faster, read_all=True)

    async def at_speed_1() -> tuple[float, int]:
        return await _first_chunk(through, callers.gateway, normal, read_all=True)

    return await _abba(at_speed, at_speed_1, plan.speed_pairs, plan.warmups)


async def _loads(
    profiles: ProfileService,
    targets: dict[str, tuple[str, tuple[tuple[str, str], ...], int]],
    tts_pid: int,
    callers: Callers,
    result: GatewayResult,
    plan: Plan,
) -> None:
    """``plan.load_rounds`` rounds of the GetProfile load on each path of ``targets`` (path -> address, metadata,
    the pid of the process it reaches), in turn; CPU of every server process over each round."""
    request, expected = await _get_profile_target(profiles, callers)
    pids = {path: pid for path, (_, _, pid) in targets.items() if path != DIRECT}
    pids = {"profiles": profiles.process.pid, **pids, "tts": tts_pid}
    for _ in range(plan.load_rounds):
        for path, (address, metadata, pid) in targets.items():
            before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            load = await asyncio.to_thread(
                run_load,
                address,
                GET_PROFILE_METHOD,
                request,
                metadata=metadata,
                expected=expected,
                concurrency=plan.load.concurrency,
                channels=plan.load.channels,
                warmup_s=plan.load.warmup_s,
                duration_s=plan.load.duration_s,
                server_pid=pid,
            )
            wall = time.perf_counter() - started
            # Only the processes on this path (the idle ones would show ~0).
            cpu = {
                name: process_cpu_seconds(pid) - before[name]
                for name, pid in pids.items()
                if name in ("profiles", path)
            }
            if load.ok == 0 or load.errors or load.mismatches:
                raise BenchError(
                    f"GetProfile load ({path}): {load.ok} ok, errors {load.errors}, mismatches {load.mismatches}"
                )
            result.loads.setdefault(path, []).append(LoadRound(load, wall, cpu))


async def _get_profile_target(profiles: ProfileService, callers: Callers) -> tuple[bytes, bytes]:
    """A profile with one sample to read; (GetProfile request bytes, the expected response bytes)."""
    async with aio.insecure_channel(profiles.address) as channel:
        stub = profiles_grpc.ProfileServiceStub(channel)
        created = await stub.CreateProfile(
            profiles_pb.CreateProfileRequest(name="bench gateway load", language=LANGUAGE),
            metadata=callers.direct,
            timeout=60,
        )
        wav = encode_file(speechlike(6.0, rate=SAMPLE_RATE), SAMPLE_RATE, "wav")
        await stub.AddSample(_sample_requests(created.profile.id, wav, "A sample."), metadata=callers.direct)
        request = profiles_pb.GetProfileRequest(id=created.profile.id).SerializeToString()
        expected: bytes = await channel.unary_unary(GET_PROFILE_METHOD, None, None)(
            request, metadata=callers.direct, timeout=10
        )
    return request, expected


@dataclass(frozen=True)
class UploadPath:
    label: str
    stub: profiles_grpc.ProfileServiceStub
    metadata: tuple[tuple[str, str], ...]
    chunk_bytes: int


async def _uploads(
    direct: profiles_grpc.ProfileServiceStub,
    paths: list[UploadPath],
    callers: Callers,
    data: bytes,
    result: GatewayResult,
    plan: Plan,
) -> None:
    """One unmeasured round, then ``plan.upload_runs`` rounds of an AddSample on every path; the order rotates
    each round so no path is always first after the previous upload's cleanup."""
    created = await direct.CreateProfile(
        profiles_pb.CreateProfileRequest(name="bench gateway upload"), metadata=callers.direct, timeout=60
    )
    profile_id = created.profile.id

    async def add(path: UploadPath) -> float:
        started = time.perf_counter()
        try:
            response = await path.stub.AddSample(
                _sample_requests(profile_id, data, upload.STUDIO_TEXT, path.chunk_bytes),
                metadata=path.metadata,
                timeout=300,
            )
        except aio.AioRpcError as error:
            raise BenchError(f"AddSample ({path.label}) failed: {describe_rpc_error(error)}") from error
        seconds = time.perf_counter() - started
        if abs(response.sample.duration_seconds - upload.SECONDS) > 1:
            raise BenchError(f"AddSample ({path.label}) stored {response.sample.duration_seconds:.1f} s")
        # One sample at a time: the profile's sample limit never comes into it.
        await direct.DeleteSample(
            profiles_pb.DeleteSampleRequest(id=response.sample.id), metadata=callers.direct, timeout=60
        )
        return seconds

    try:
        for run in range(-1, plan.upload_runs):
            shift = run % len(paths)
            for path in paths[shift:] + paths[:shift]:
                seconds = await add(path)
                if run >= 0:
                    result.uploads.setdefault(path.label, []).append(seconds)
    finally:
        await direct.DeleteProfile(
            profiles_pb.DeleteProfileRequest(id=profile_id), metadata=callers.direct, timeout=60
        )
    result.uploads = {path.label: result.uploads[path.label] for path in paths}


@dataclass
class StreamReads:
    messages: int = 0
    bytes: int = 0
    with_audio: set[int] = field(default_factory=set)  # the streams that had sent audio
    errors: list[str] = field(default_factory=list)


async def _read_streams(
    through: tts_grpc.TtsServiceStub,
    metadata: tuple[tuple[str, str], ...],
    request: tts_pb.SynthesizeStreamRequest,
    streams: int,
    pause_s: float,
    seconds: float,
    tick: Callable[[], None],
) -> StreamReads:
    """``streams`` SynthesizeStream calls, each read one message at a time with ``pause_s`` after each, for
    ``seconds``; then every client cancels its call (goes away). ``tick`` runs every 0.25 s meanwhile."""
    reads = StreamReads()
    stop = asyncio.Event()

    async def reader(index: int) -> None:
        call = through.SynthesizeStream(request, metadata=metadata, timeout=300)
        try:
            while not stop.is_set():
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                reads.messages += 1
                reads.bytes += response.ByteSize()
                if response.WhichOneof("payload") == "audio":
                    reads.with_audio.add(index)
                if pause_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause_s)
        except aio.AioRpcError as error:
            reads.errors.append(describe_rpc_error(error))
        finally:
            call.cancel()  # the client goes away: the gateway must cancel the backend and let go

    readers = [asyncio.ensure_future(reader(index)) for index in range(streams)]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.25)
        tick()
    stop.set()
    await asyncio.gather(*readers)
    if reads.errors:
        raise BenchError(f"SynthesizeStream clients failed: {reads.errors[:3]}")
    return reads


async def _memory(
    through: tts_grpc.TtsServiceStub,
    gateway: GatewayService,
    callers: Callers,
    profile_id: str,
    plan: Plan,
) -> Memory:
    memory = Memory()
    request = _stream_request(profile_id, long_text(), plan.slow_frames)
    pid = gateway.process.pid
    memory.before_mb = rss_mb(pid)
    slow = await _read_streams(
        through,
        callers.gateway,
        request,
        plan.slow_streams,
        plan.slow_read_pause_s,
        plan.slow_seconds,
        lambda: memory.samples_mb.append(rss_mb(pid)),
    )
    memory.messages_read, memory.bytes_read, memory.streams_open = (
        slow.messages,
        slow.bytes,
        len(slow.with_audio),
    )
    await asyncio.sleep(2.0)
    memory.after_mb = rss_mb(pid)
    # The same streams read as fast as they come: what the backend produces, so the slow reads above were slower
    # than the producer (else nothing would have waited anywhere and the figure would prove nothing).
    fast = await _read_streams(
        through, callers.gateway, request, plan.slow_streams, 0.0, plan.fast_seconds, lambda: None
    )
    memory.fast_messages_per_s = fast.messages / plan.fast_seconds
    return memory


@dataclass(frozen=True)
class BareProxy:
    address: str
    process: ManagedProcess


@contextlib.asynccontextmanager
async def bare_proxy(target: str, internal_token: str) -> AsyncIterator[BareProxy]:
    """``python -m bench.gateway --bare-proxy`` to ``target`` on a free port, once it accepts connections."""
    port = free_port(HOST)
    argv = python_module_argv("bench.gateway", "--bare-proxy", "--port", str(port), "--target", target)
    env = child_environment({"BENCH_INTERNAL_TOKEN": internal_token})
    with managed_process("bare proxy", argv, env) as process:
        address = f"{HOST}:{port}"
        deadline = time.monotonic() + 30
        while True:
            process.check_alive("starting")
            async with aio.insecure_channel(address) as channel:
                try:
                    await asyncio.wait_for(channel.channel_ready(), timeout=1)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise BenchError(
                            f"the bare proxy did not listen within 30 s:\n{process.output()}"
                        ) from None
        yield BareProxy(address, process)


class _BareForwarder(grpc.GenericRpcHandler):
    """Unary and client-streaming calls to one channel, as bytes; the client's metadata but its key, plus the
    tenant and the internal token: forwarding and nothing else."""

    def __init__(self, channel: aio.Channel, token: str) -> None:
        # Typed loosely, as the gateway's: grpc-stubs know no multi-callable without (de)serialisers.
        self._channel: Any = channel
        self._added = ((TENANT_KEY, TENANT), (INTERNAL_TOKEN_KEY, token))

    def _metadata(self, context: aio.ServicerContext[bytes, bytes]) -> tuple[tuple[str, str | bytes], ...]:
        received = context.invocation_metadata() or ()
        return (*((key, value) for key, value in received if key != "authorization"), *self._added)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        channel = self._channel

        async def unary_unary(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            response: bytes = await channel.unary_unary(method)(request, metadata=self._metadata(context))
            return response

        async def stream_unary(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
        ) -> bytes:
            call = channel.stream_unary(method)(metadata=self._metadata(context))

            async def pump() -> None:
                async for message in requests:
                    await call.write(message)
                await call.done_writing()

            pumping = asyncio.ensure_future(pump())
            try:
                response: bytes = await call
                return response
            finally:
                pumping.cancel()

        if method.endswith("/AddSample"):
            return grpc.stream_unary_rpc_method_handler(stream_unary)
        return grpc.unary_unary_rpc_method_handler(unary_unary)


async def _serve_bare_proxy(port: int, target: str, token: str) -> None:
    limit = 8 * 1024 * 1024
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    async with aio.insecure_channel(target, options=options) as channel:
        server = aio.server(options=options)
        server.add_generic_rpc_handlers((_BareForwarder(channel, token),))
        server.add_insecure_port(f"{HOST}:{port}")
        await server.start()
        await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="the bare forwarding proxy the gateway benchmark compares with"
    )
    parser.add_argument("--bare-proxy", action="store_true", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port of the profile service")
    args = parser.parse_args()
    asyncio.run(_serve_bare_proxy(args.port, args.target, os.environ.get("BENCH_INTERNAL_TOKEN", "")))


if __name__ == "__main__":
    main()
