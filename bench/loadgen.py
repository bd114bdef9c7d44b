"""Closed-loop unary load generator, run in a process of its own so it never shares a GIL with the server.

``python -m bench.loadgen --target HOST:PORT --method /pkg.Service/Method --payload-hex HEX ...`` runs
``--concurrency`` asyncio tasks spread over ``--channels`` channels (each its own HTTP/2 connection); each task
makes calls back to back with the same serialized request (identity serializers: the client does the same work
against every server). After ``--warmup`` seconds it measures for ``--duration`` seconds: every call that
completes inside the window counts, with its latency (``perf_counter`` around the call). When
``--expect-hex`` is given every response is compared with it, so a wrong answer can't pass for a fast one.

It prints one JSON object on stdout (see :class:`LoadResult`). :func:`run_load` is the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from grpc import aio

from bench.common import REPO_ROOT, BenchError, child_environment, python_module_argv

CALL_TIMEOUT_S = 10.0
EPISODES_KEPT = 12
# A call is an outlier above max(OUTLIER_FACTOR x p50, OUTLIER_FLOOR_MS); outliers closer than EPISODE_GAP_S in
# completion time form one episode (a stall of the server or of the client).
OUTLIER_FACTOR = 2.0
OUTLIER_FLOOR_MS = 25.0
EPISODE_GAP_S = 0.25


@dataclass
class LoadResult:
    target: str
    method: str
    concurrency: int
    channels: int
    warmup_s: float
    duration_s: float
    calls: int  # completed inside the measurement window (successful or not)
    ok: int
    ops_per_s: float  # successful calls per second of the window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    over_25ms: int
    errors: dict[str, int] = field(default_factory=dict)  # status code -> count, warmup included
    mismatches: int = 0  # responses that differ from --expect-hex
    per_second_ops: list[int] = field(default_factory=list)  # completions per second of the window
    outlier_threshold_ms: float = math.nan
    # Stall episodes in time order: (seconds into the window, outlier calls, slowest ms).
    episodes: list[tuple[float, int, float]] = field(default_factory=list)
    client_cpu_pct: float = math.nan  # CPU of this process during the window, % of one core
    server_cpu_pct: float = math.nan  # CPU of --server-pid (all its threads) during the window, % of one core

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        raw: dict[str, Any] = json.loads(text)
        raw["episodes"] = [(float(t), int(n), float(ms)) for t, n, ms in raw.get("episodes", [])]
        return cls(**raw)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads) from /proc; NaN where that is unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        # After the command name: state is field 3, utime and stime are fields 14 and 15 (1-based, man 5 proc).
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan


class _CpuWindow:
    """CPU used by this process and the server during the measurement window."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.client_pct = math.nan
        self.server_pct = math.nan

    def _sample(self) -> tuple[float, float, float]:
        server = process_cpu_seconds(self.server_pid) if self.server_pid else math.nan
        return time.perf_counter(), time.process_time(), server

    async def run(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        wall0, client0, server0 = self._sample()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        wall1, client1, server1 = self._sample()
        elapsed = wall1 - wall0
        if elapsed > 0:
            self.client_pct = 100 * (client1 - client0) / elapsed
            self.server_pct = 100 * (server1 - server0) / elapsed


def stall_episodes(calls: list[tuple[float, float]], threshold_ms: float) -> list[tuple[float, int, float]]:
    """Group the calls slower than ``threshold_ms`` by completion time: [(first completion s, calls, max ms)]."""
    slow = sorted((t, ms) for t, ms in calls if ms > threshold_ms)
    episodes: list[tuple[float, int, float]] = []
    last = -math.inf
    for t, ms in slow:
        if episodes and t - last < EPISODE_GAP_S:
            start, count, worst = episodes[-1]
            episodes[-1] = (start, count + 1, max(worst, ms))
        else:
            episodes.append((t, 1, ms))
        last = t
    return [(round(t, 2), count, round(worst, 1)) for t, count, worst in episodes]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class _Recorder:
    def __init__(self, measure_start: float, measure_end: float) -> None:
        self.measure_start = measure_start
        self.measure_end = measure_end
        self.latencies: list[float] = []
        self.completions: list[float] = []
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.mismatches = 0

    def record(self, started: float, finished: float, ok: bool) -> None:
        if self.measure_start <= finished < self.measure_end:
            self.calls += 1
            if ok:
                self.latencies.append(finished - started)
                self.completions.append(finished)


async def _worker(
    call: aio.UnaryUnaryMultiCallable[bytes, bytes],
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    expected: bytes | None,
    recorder: _Recorder,
) -> None:
    perf_counter = time.perf_counter
    while True:
        started = perf_counter()
        if started >= recorder.measure_end:
            return
        ok = True
        try:
            response = await call(payload, metadata=metadata, timeout=CALL_TIMEOUT_S)
            if expected is not None and response != expected:
                recorder.mismatches += 1
                ok = False
        except aio.AioRpcError as error:
            recorder.errors[error.code().name] += 1
            ok = False
        recorder.record(started, perf_counter(), ok)


async def generate_load(
    target: str,
    method: str,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
    expected: bytes | None,
    concurrency: int,
    channel_count: int,
    warmup_s: float,
    duration_s: float,
    server_pid: int | None = None,
) -> LoadResult:
    # A local subchannel pool per channel: each channel gets its own connection instead of sharing one.
    channels = [
        aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channel_count)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        calls = [channel.unary_unary(method, None, None) for channel in channels]
        gc.collect()
        gc.freeze()  # keep the collector's full passes off the set-up objects
        start = time.perf_counter()
        recorder = _Recorder(start + warmup_s, start + warmup_s + duration_s)
        cpu = _CpuWindow(server_pid)
        await asyncio.gather(
            cpu.run(recorder.measure_start, recorder.measure_end),
            *(
                _worker(calls[i % channel_count], payload, metadata, expected, recorder)
                for i in range(concurrency)
            ),
        )
    finally:
        for channel in channels:
            await channel.close(None)

    latencies_ms = sorted(value * 1000 for value in recorder.latencies)
    per_second = [0] * max(1, math.ceil(duration_s))
    for finished in recorder.completions:
        index = min(len(per_second) - 1, int(finished - recorder.measure_start))
        per_second[index] += 1
    threshold_ms = (
        max(OUTLIER_FACTOR * percentile(latencies_ms, 0.5), OUTLIER_FLOOR_MS) if latencies_ms else math.nan
    )
    episodes = stall_episodes(
        [
            (t - recorder.measure_start, lat * 1000)
            for t, lat in zip(recorder.completions, recorder.latencies, strict=True)
        ],
        threshold_ms,
    )
    ok = len(latencies_ms)
    return LoadResult(
        target=target,
        method=method,
        concurrency=concurrency,
        channels=channel_count,
        warmup_s=warmup_s,
        duration_s=duration_s,
        calls=recorder.calls,
        ok=ok,
        ops_per_s=ok / duration_s,
        p50_ms=percentile(latencies_ms, 0.50),
        p90_ms=percentile(latencies_ms, 0.90),
        p99_ms=percentile(latencies_ms, 0.99),
        max_ms=latencies_ms[-1] if latencies_ms else math.nan,
        mean_ms=sum(latencies_ms) / ok if ok else math.nan,
        over_25ms=sum(1 for value in latencies_ms if value > 25.0),
        errors=dict(recorder.errors),
        mismatches=recorder.mismatches,
        per_second_ops=per_second,
        outlier_threshold_ms=round(threshold_ms, 1),
        episodes=episodes[:EPISODES_KEPT],
        client_cpu_pct=round(cpu.client_pct, 1),
        server_cpu_pct=round(cpu.server_pct, 1),
    )


def run_load(
    target: str,
    method: str,
    payload: bytes,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    expected: bytes | None = None,
    concurrency: int = 32,
    channels: int = 4,
    warmup_s: float = 2.0,
    duration_s: float = 8.0,
    server_pid: int | None = None,
) -> LoadResult:
    """Run the load generator as a child process (blocking) and return what it measured."""
    argv = python_module_argv(
        "bench.loadgen",
        "--target",
        target,
        "--method",
        method,
        "--payload-hex",
        payload.hex(),
        "--concurrency",
        str(concurrency),
        "--channels",
        str(channels),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
    )
    for key, value in metadata:
        argv += ["--metadata", f"{key}={value}"]
    if expected is not None:
        argv += ["--expect-hex", expected.hex()]
    if server_pid is not None:
        argv += ["--server-pid", str(server_pid)]
    try:
        completed = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=child_environment({}),
            timeout=warmup_s + duration_s + 60,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"the load generator against {target} did not finish in time: {error}") from error
    if completed.returncode != 0:
        raise BenchError(
            f"the load generator against {target} failed with status {completed.returncode}:\n"
            f"{completed.stderr[-8000:]}"
        )
    lines = completed.stdout.strip().splitlines()
    if not lines:
        raise BenchError(
            f"the load generator against {target} printed nothing; stderr:\n{completed.stderr[-8000:]}"
        )
    return LoadResult.from_json(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop unary gRPC load generator")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--method", required=True, help="full method name, /package.Service/Method")
    parser.add_argument("--payload-hex", required=True, help="the serialized request, hex")
    parser.add_argument("--expect-hex", help="the serialized response every call must return, hex")
    parser.add_argument("--metadata", action="append", default=[], help="key=value, repeatable")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--server-pid", type=int, help="report this process's CPU use during the window")
    args = parser.parse_args()
    metadata: list[tuple[str, str]] = []
    for item in args.metadata:
        key, _, value = item.partition("=")
        metadata.append((key, value))
    result = asyncio.run(
        generate_load(
            args.target,
            args.method,
            bytes.fromhex(args.payload_hex),
            tuple(metadata),
            bytes.fromhex(args.expect_hex) if args.expect_hex else None,
            args.concurrency,
            args.channels,
            args.warmup,
            args.duration,
            args.server_pid,
        )
    )
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


if __name__ == "__main__":
    main()
