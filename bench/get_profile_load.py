"""GetProfile throughput and latency under 32 concurrent clients, against the bare grpc.aio echo server.

The same load generator (:mod:`bench.loadgen`, its own process) drives both servers with the same request bytes
(a serialized ``GetProfileRequest``) and the same tenant metadata; the echo server answers the request itself, the
profile service reads the profile (one sample attached) from its database on every call.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

from grpc import aio

from bench.common import BenchError, Figure, format_value, render_table
from bench.echo_server import ECHO_METHOD
from bench.loadgen import LoadResult, run_load
from bench.services import CONFIG_TITLES, FILESYSTEM, EchoServer, ProfileService, tenant_metadata
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_testing.media_files import encode_file, speechlike

GET_PROFILE_METHOD = "/voice.profiles.v1.ProfileService/GetProfile"
LOAD_TENANT = "bench-load"
SAMPLE_SECONDS = 6.0


@dataclass(frozen=True)
class LoadPlan:
    warmup_s: float
    duration_s: float
    concurrency: int = 32
    channels: int = 4


@dataclass
class ServerLoad:
    label: str
    result: LoadResult
    server_log: str = ""  # what the server wrote while under load (warnings, errors)


async def run_echo(echo: EchoServer, plan: LoadPlan) -> ServerLoad:
    # Same size and shape as the GetProfile request; the echo server sends it back.
    request = pb.GetProfileRequest(id=str(uuid.uuid4())).SerializeToString()
    result = await _load(echo.address, ECHO_METHOD, request, request, plan, echo.process.pid)
    _check_clean(result, "the echo server")
    return ServerLoad("echo (bare grpc.aio)", result)


async def prepare_profile(service: ProfileService) -> tuple[bytes, bytes]:
    """Create the load's profile with one sample; returns (GetProfile request bytes, expected response bytes)."""
    metadata = tenant_metadata(LOAD_TENANT)
    clip = encode_file(speechlike(SAMPLE_SECONDS, 24000), 24000, "wav")
    async with aio.insecure_channel(service.address) as channel:
        stub = pb_grpc.ProfileServiceStub(channel)
        created = await stub.CreateProfile(
            pb.CreateProfileRequest(
                name="bench load target", description="GetProfile under load", language="en"
            ),
            metadata=metadata,
        )
        profile_id = created.profile.id
        sample_meta = pb.SampleMetadata(profile_id=profile_id, reference_text="A sample.", file_name="s.wav")
        messages = [pb.AddSampleRequest(metadata=sample_meta)]
        messages += [pb.AddSampleRequest(chunk=clip[i : i + 65536]) for i in range(0, len(clip), 65536)]
        await stub.AddSample(iter(messages), metadata=metadata)
        request = pb.GetProfileRequest(id=profile_id).SerializeToString()
        expected: bytes = await channel.unary_unary(GET_PROFILE_METHOD, None, None)(
            request, metadata=metadata, timeout=10
        )
    profile = pb.GetProfileResponse.FromString(expected).profile
    if profile.id != profile_id or profile.sample_count != 1:
        raise BenchError(f"GetProfile answered an unexpected profile: {profile}")
    return request, expected


async def run_get_profile(service: ProfileService, plan: LoadPlan, note: str = "") -> ServerLoad:
    request, expected = await prepare_profile(service)
    mark = service.process.mark()
    result = await _load(service.address, GET_PROFILE_METHOD, request, expected, plan, service.process.pid)
    service.process.check_alive("under GetProfile load")
    return ServerLoad(
        f"GetProfile, {CONFIG_TITLES[service.config]}{note}", result, service.process.output_since(mark)
    )


async def _load(
    target: str, method: str, request: bytes, expected: bytes, plan: LoadPlan, server_pid: int
) -> LoadResult:
    return await asyncio.to_thread(
        run_load,
        target,
        method,
        request,
        metadata=tenant_metadata(LOAD_TENANT),
        expected=expected,
        concurrency=plan.concurrency,
        channels=plan.channels,
        warmup_s=plan.warmup_s,
        duration_s=plan.duration_s,
        server_pid=server_pid,
    )


def _check_clean(result: LoadResult, what: str) -> None:
    if result.ok == 0:
        raise BenchError(
            f"no call to {what} succeeded: errors {result.errors}, mismatches {result.mismatches}"
        )


def figures(echo: ServerLoad, loads: dict[str, ServerLoad]) -> list[Figure]:
    out: list[Figure] = []
    for config, load in loads.items():
        if config not in CONFIG_TITLES:
            continue  # informational rows (e.g. the read cache turned off) have no goal of their own
        prefix = "get_profile" if config == FILESYSTEM else "get_profile_postgres"
        out.append(
            Figure(f"{prefix}_vs_echo_ops_ratio", load.result.ops_per_s / echo.result.ops_per_s, ">=", 0.5)
        )
        out.append(Figure(f"{prefix}_p99_ms", load.result.p99_ms, "<=", 25.0))
    return out


def report(echo: ServerLoad, loads: dict[str, ServerLoad], plan: LoadPlan) -> str:
    rows: list[list[object]] = []
    for load in (echo, *loads.values()):
        r = load.result
        errors = sum(r.errors.values()) + r.mismatches
        rows.append(
            [
                load.label,
                round(r.ops_per_s),
                r.ops_per_s / echo.result.ops_per_s,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms,
                r.over_25ms,
                errors,
                f"{r.server_cpu_pct:.0f}%",
                f"{r.client_cpu_pct:.0f}%",
            ]
        )
    title = (
        f"GetProfile vs bare grpc.aio echo: {plan.concurrency} concurrent clients over {plan.channels} channels, "
        f"load generator in its own process, {format_value(plan.warmup_s)} s warm-up + "
        f"{format_value(plan.duration_s)} s measured"
    )
    headers = [
        "server",
        "ops/s",
        "vs echo",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        ">25ms",
        "errors",
        "server CPU",
        "client CPU",
    ]
    lines = [
        render_table(title, headers, rows),
        "  CPU: % of one core during the measured window (server: all threads of its process); the machine has "
        f"{os.cpu_count()} cores.",
        f"  Closed loop: latency ~= {plan.concurrency} clients / ops/s (Little's law), so a p99 of 25 ms at "
        f"{plan.concurrency} clients needs about {plan.concurrency / 0.025:.0f} ops/s or more.",
    ]
    for load in (echo, *loads.values()):
        r = load.result
        notes: list[str] = []
        if r.per_second_ops:
            notes.append(
                f"ops per second of the window min {min(r.per_second_ops)} / max {max(r.per_second_ops)}"
            )
        if r.episodes:
            listed = ", ".join(f"{t:.2f} s ({n} calls, max {ms:.0f} ms)" for t, n, ms in r.episodes)
            notes.append(f"stalls (calls over {r.outlier_threshold_ms:.0f} ms, grouped) at {listed}")
        else:
            notes.append(f"no stall (no call over {r.outlier_threshold_ms:.0f} ms)")
        if r.errors:
            notes.append(f"errors by status (warm-up included): {r.errors}")
        if r.mismatches:
            notes.append(f"{r.mismatches} responses differed from the expected bytes")
        lines.append(f"  {load.label}: " + "; ".join(notes))
        if load.server_log.strip():
            log = "\n".join(f"      | {line}" for line in load.server_log.strip().splitlines()[-20:])
            lines.append(f"    server output while under load (last lines):\n{log}")
    return "\n".join(lines)
