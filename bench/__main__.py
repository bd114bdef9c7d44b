"""``python -m bench [--quick] [--only NAME ...] [--breakdown]``: run the benchmarks, print tables, then figures.

The last lines are one per figure, ``BENCH <name> <value> goal <op> <target> <PASS|MISS>``. The exit status is 0
whatever the figures say (they are information); it is 1 only when a benchmark itself failed (a server did not
start, a call failed), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import asr, gateway, get_profile_load, load, speed_stretch, tts, upload
from bench.common import BenchError, Figure, format_value
from bench.get_profile_load import LoadPlan, ServerLoad
from bench.services import CONFIGS, FILESYSTEM, POSTGRES_S3, EchoServer, echo_server, profile_service

GET_PROFILE = "get_profile"
UNCACHED = "filesystem_read_cache_off"
ADD_SAMPLE = "add_sample"
TTS = "tts"
ASR = "asr"
GATEWAY = "gateway"
LOAD = "load"
SPEED_STRETCH = "speed_stretch"
BENCHMARKS = (GET_PROFILE, ADD_SAMPLE, TTS, ASR, GATEWAY, LOAD, SPEED_STRETCH)
# The ASR service runs alone (inline audio needs no profile service): a pseudo-configuration outside CONFIGS.
STANDALONE = "standalone"
# The configurations each benchmark runs on: the TTS service keeps nothing but prompts in the store, so one is enough.
BENCHMARK_CONFIGS: dict[str, tuple[str, ...]] = {
    GET_PROFILE: CONFIGS,
    ADD_SAMPLE: CONFIGS,
    TTS: (FILESYSTEM,),
    ASR: (STANDALONE,),
    GATEWAY: (STANDALONE,),  # starts its own services (internal token on), outside CONFIGS
    LOAD: (STANDALONE,),  # the whole platform on PostgreSQL + S3 behind the gateway, started by bench.load
    SPEED_STRETCH: (STANDALONE,),  # in this process, no servers
}
# --only also takes a figure name, which runs just what that figure needs.
FIGURES: dict[str, tuple[str, str]] = {
    "get_profile_vs_echo_ops_ratio": (GET_PROFILE, FILESYSTEM),
    "get_profile_p99_ms": (GET_PROFILE, FILESYSTEM),
    "get_profile_postgres_vs_echo_ops_ratio": (GET_PROFILE, POSTGRES_S3),
    "get_profile_postgres_p99_ms": (GET_PROFILE, POSTGRES_S3),
    "add_sample_5min_vs_put_ratio_filesystem": (ADD_SAMPLE, FILESYSTEM),
    "add_sample_5min_vs_put_ratio_s3": (ADD_SAMPLE, POSTGRES_S3),
    **{name: (TTS, FILESYSTEM) for name in tts.FIGURE_NAMES},
    **{name: (ASR, STANDALONE) for name in asr.FIGURE_NAMES},
    **{name: (GATEWAY, STANDALONE) for name in gateway.FIGURE_NAMES},
    **{name: (LOAD, STANDALONE) for name in load.FIGURE_NAMES},
    **{name: (SPEED_STRETCH, STANDALONE) for name in speed_stretch.FIGURE_NAMES},
}


@dataclass
class Options:
    quick: bool
    breakdown: bool
    selection: dict[str, set[str]]  # benchmark -> configurations
    figure_names: set[str] | None  # None: every figure of the selected benchmarks
    plan: LoadPlan
    upload_runs: int
    breakdown_runs: int
    tts_plan: tts.Plan
    asr_plan: asr.Plan
    gateway_plan: gateway.Plan
    load_plan: load.Plan
    speed_stretch_plan: speed_stretch.Plan


@dataclass
class Outcome:
    figures: list[Figure] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short durations and single runs (smoke test)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run one benchmark ({', '.join(BENCHMARKS)}) or what one figure needs ({', '.join(FIGURES)}); "
        "repeatable",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="time the parts of AddSample even when its ratio meets the goal",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent GetProfile clients (32)")
    parser.add_argument("--channels", type=int, default=4, help="channels the clients share (4)")
    args = parser.parse_args(argv)

    selection: dict[str, set[str]] = {}
    figure_names: set[str] | None = None
    if not args.only:
        selection = {name: set(BENCHMARK_CONFIGS[name]) for name in BENCHMARKS}
    else:
        figure_names = set()
        for name in args.only:
            if name in BENCHMARKS:
                selection.setdefault(name, set()).update(BENCHMARK_CONFIGS[name])
                figure_names.update(figure for figure, (bench, _) in FIGURES.items() if bench == name)
            elif name in FIGURES:
                bench, config = FIGURES[name]
                selection.setdefault(bench, set()).add(config)
                figure_names.add(name)
            else:
                parser.error(f"--only {name!r}: expected one of {', '.join((*BENCHMARKS, *FIGURES))}")
    if args.quick:
        plan = LoadPlan(warmup_s=0.5, duration_s=2.0, concurrency=args.concurrency, channels=args.channels)
    else:
        plan = LoadPlan(warmup_s=2.0, duration_s=8.0, concurrency=args.concurrency, channels=args.channels)
    runs = 1 if args.quick else 3
    breakdown_runs = 1 if args.quick else 5
    return Options(
        args.quick,
        args.breakdown,
        selection,
        figure_names,
        plan,
        runs,
        breakdown_runs,
        tts.Plan.for_run(args.quick),
        asr.Plan.for_run(args.quick),
        gateway.Plan.for_run(args.quick),
        load.Plan.for_run(args.quick),
        speed_stretch.Plan.for_run(args.quick),
    )


async def run(options: Options) -> Outcome:
    outcome = Outcome()
    tables: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="voice-bench-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            # The echo server is the baseline of GetProfile and of AddSample's breakdown; TTS does not use it.
            echo: EchoServer | None = None
            if GET_PROFILE in options.selection or ADD_SAMPLE in options.selection:
                echo = await stack.enter_async_context(echo_server())
                progress(f"echo server up at {echo.address} (pid {echo.process.pid})")
            echo_load: ServerLoad | None = None
            if GET_PROFILE in options.selection and echo is not None:
                progress("load on the echo server")
                echo_load = await get_profile_load.run_echo(echo, options.plan)
            recording: upload.Recording | None = None
            if ADD_SAMPLE in options.selection:
                progress(f"making the {format_value(upload.SECONDS)} s recording")
                recording = await asyncio.to_thread(upload.make_recording)
            loads: dict[str, ServerLoad] = {}
            uploads: list[upload.UploadResult] = []
            tts_results: list[tts.TtsResult] = []
            for config in CONFIGS:
                wanted = {bench for bench, configs in options.selection.items() if config in configs}
                if not wanted:
                    continue
                try:
                    recording = await _run_config(
                        config,
                        wanted,
                        options,
                        workdir,
                        echo,
                        echo_load,
                        recording,
                        loads,
                        uploads,
                        tts_results,
                    )
                except (BenchError, OSError) as error:
                    outcome.failures.append(f"{config}: {error}")
                    progress(f"FAILED ({config}): {error}")
                except Exception as error:  # report the others' figures anyway, then fail
                    outcome.failures.append(
                        f"{config}: {type(error).__name__}: {error}\n{traceback.format_exc()}"
                    )
                    progress(f"FAILED ({config}): {type(error).__name__}: {error}")
            if ASR in options.selection:
                parts = {
                    asr.PART_OF[name]
                    for name in asr.FIGURE_NAMES
                    if options.figure_names is None or name in options.figure_names
                }
                try:
                    asr_result = await asr.run_asr(workdir, options.asr_plan, parts, progress)
                    tables.append(asr.report(asr_result))
                    outcome.figures += asr_result.figures()
                except (BenchError, OSError) as error:
                    outcome.failures.append(f"{ASR}: {error}")
                    progress(f"FAILED ({ASR}): {error}")
            if GATEWAY in options.selection:
                gateway_parts = frozenset(
                    gateway.PART_OF[name]
                    for name in gateway.FIGURE_NAMES
                    if options.figure_names is None or name in options.figure_names
                )
                try:
                    gateway_result = await gateway.run_gateway(
                        workdir / GATEWAY, options.gateway_plan, progress, gateway_parts
                    )
                    tables.append(gateway.report(gateway_result))
                    outcome.figures += gateway_result.figures()
                except (BenchError, OSError) as error:
                    outcome.failures.append(f"{GATEWAY}: {error}")
                    progress(f"FAILED ({GATEWAY}): {error}")
            if SPEED_STRETCH in options.selection:
                try:
                    stretch_result = await asyncio.to_thread(
                        speed_stretch.run_speed_stretch, options.speed_stretch_plan, progress
                    )
                    tables.append(speed_stretch.report(stretch_result))
                    outcome.figures += stretch_result.figures()
                except (BenchError, OSError) as error:
                    outcome.failures.append(f"{SPEED_STRETCH}: {error}")
                    progress(f"FAILED ({SPEED_STRETCH}): {error}")
            if LOAD in options.selection:
                try:
                    load_result = await load.run_load(workdir / LOAD, options.load_plan, progress)
                    tables.append(load.report(load_result))
                    outcome.figures += load_result.figures()
                except (BenchError, OSError) as error:
                    outcome.failures.append(f"{LOAD}: {error}")
                    progress(f"FAILED ({LOAD}): {error}")
            if echo_load is not None and FILESYSTEM in loads:
                # The same embedded service with its read cache off: what every GetProfile costs in the database.
                progress("GetProfile load (filesystem, read cache off)")
                async with profile_service(
                    FILESYSTEM, workdir, {"PROFILES_READ_CACHE_SECONDS": "0"}
                ) as uncached:
                    loads[UNCACHED] = await get_profile_load.run_get_profile(
                        uncached, options.plan, " - read cache off (no goal)"
                    )
            if echo_load is not None and loads:
                tables.append(get_profile_load.report(echo_load, loads, options.plan))
                outcome.figures += get_profile_load.figures(echo_load, loads)
            if uploads:
                tables.append(upload.report(uploads))
                outcome.figures += [result.figure for result in uploads]
            for result in tts_results:
                tables.append(tts.report(result))
                outcome.figures += result.figures()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for table in tables:
        print(table, end="\n\n", flush=True)
    if options.figure_names is not None:
        outcome.figures = [figure for figure in outcome.figures if figure.name in options.figure_names]
    return outcome


async def _run_config(
    config: str,
    wanted: set[str],
    options: Options,
    workdir: Path,
    echo: EchoServer | None,
    echo_load: ServerLoad | None,
    recording: upload.Recording | None,
    loads: dict[str, ServerLoad],
    uploads: list[upload.UploadResult],
    tts_results: list[tts.TtsResult],
) -> upload.Recording | None:
    progress(f"starting the profile service ({config})")
    async with profile_service(config, workdir) as service:
        progress(f"profile service ({config}) SERVING at {service.address} (pid {service.process.pid})")
        if GET_PROFILE in wanted and echo_load is not None:
            progress(f"GetProfile load ({config})")
            loads[config] = await get_profile_load.run_get_profile(service, options.plan)
        if ADD_SAMPLE in wanted and recording is not None:
            progress(f"AddSample vs put ({config}), {options.upload_runs} run(s) each")
            try:
                result = await upload.run_upload(service, recording, options.upload_runs, not options.quick)
            except upload.TooLong as error:
                progress(
                    f"the service rejected {format_value(recording.seconds)} s as too long ({error}); using 299 s"
                )
                recording = await asyncio.to_thread(
                    upload.make_recording,
                    upload.FALLBACK_SECONDS,
                    f"{format_value(upload.SECONDS)} s was rejected as too long ({error}), so 299 s is used",
                )
                result = await upload.run_upload(service, recording, options.upload_runs, not options.quick)
            if echo is not None and (options.breakdown or not result.figure.passed):
                progress(f"timing the parts of AddSample ({config})")
                result.breakdown = await upload.breakdown(service, echo, recording, options.breakdown_runs)
            uploads.append(result)
        if TTS in wanted:
            progress(f"TTS benchmarks beside the profile service ({config})")
            tts_results.append(await tts.run_tts(service, workdir, options.tts_plan, progress))
    return recording


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    started = time.perf_counter()
    try:
        outcome = asyncio.run(run(options))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BenchError, OSError) as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    progress(f"done in {time.perf_counter() - started:.0f} s")
    for failure in outcome.failures:
        print(f"benchmark failed: {failure}", file=sys.stderr)
    for figure in outcome.figures:
        print(figure.line())
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
