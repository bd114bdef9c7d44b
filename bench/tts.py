"""The TTS service against its own engine: time to first audio, long text, the prompt cache, concurrent requests.

Everything runs on the tiny random-weight model built with ``never_eos=True`` (:mod:`tools.tiny_model`) into
the run's scratch directory: its talker never picks EOS, so every piece runs to ``max_new_tokens`` and each figure
compares generations of a known length (:data:`FRAMES_PER_PIECE` frames, 4.8 s of audio, per piece; the
time-to-first-audio runs :data:`TTFA_FRAMES`). The time-to-first-audio ratio alone is taken on a second, never-EOS
model at the released 0.6B shape (:mod:`bench.tts_released_shape`).

The service is ``python -m voice_tts`` (:func:`bench.services.tts_service`) beside the profile service of the
``filesystem`` configuration; the voice is a profile with one 4 s sample and its transcript, so every request goes
the production way (profile and sample read from the profile service, prompt from the prompt cache). The engine is
:class:`voice_tts.frame_generation.Utterance` in this process, on the same model files, with the same prompt
(built from the same clips the profile service hands out), text, seed and chunk settings. Both use
:data:`THREADS` math threads (``OMP_NUM_THREADS`` for the service, ``torch.set_num_threads`` in the engine's
thread), one by default: on two cores, two OpenMP threads per process made single runs up to ten times slower.

Figures (medians over several runs, after unmeasured warm-ups of both sides):

* ``tts_stream_ttfa_vs_engine_ratio``: SynthesizeStream's time to the first audio chunk as the client sees it,
  over the engine's first ``stream()`` yield counted from constructing the utterance, on a random-weight model at
  the released 0.6B shape (:mod:`bench.tts_released_shape`, which says why). Service and engine runs alternate; the
  figure is the median of each service run over the engine run after it. The detail gives the tiny model's ratio.
* ``tts_stream_ttfa_tiny_added_ms``: the same pairs on the tiny model, as milliseconds the service adds (the
  median of the paired differences), beside a bare grpc.aio round trip.
* ``tts_long_text_first_chunk_vs_total_ratio``: a 300-character text (two pieces for the service's 200-character
  split): time to the first audio chunk over the time to the end of the stream.
* ``tts_prompt_cold_vs_warm_ratio``: ``PromptCache.get_or_create`` on a full miss (object store miss, then
  ``create_voice_clone_prompt`` on the reference, then the put) over a memory hit; ``..._cold_vs_store_ratio``
  over a hit in the object store with an empty memory (a restarted replica). A warm-up prompt of another clip
  first takes the one-time costs (numba compiling librosa's kernels, first encoder runs).
* ``tts_concurrent8_vs_sequential8_ratio``: the wall time of eight Synthesize calls started at once over eight
  made one after another (distinct seeds, the same eight in both).
* ``tts_stream_vs_one_shot_max_pcm16_steps``: greedy SynthesizeStream against qwen_tts's ``generate_voice_clone`` on
  the same prompt (:data:`PARITY_FRAMES` frames), the largest difference in PCM16 steps; the detail adds a run past
  the package's 300-frame decode chunk against one whole decode.
* ``tts_streaming_decoder_vs_whole_time_ratio``: the streaming decoder in the service's chunks over one whole decode
  of the same random codes, at the released decoder's shape (random weights); the tiny model's and the old
  left-context scheme's ratios in the detail.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from grpc import aio

from bench.common import BenchError, Figure, format_value, median, render_table
from bench.echo_server import ECHO_METHOD
from bench.services import (
    ProfileService,
    TtsService,
    describe_rpc_error,
    echo_server,
    tenant_metadata,
    tts_service,
)
from bench.tts_released_shape import ReleasedShapeRuns, measure_released_shape_ttfa
from bench.tts_streams import (
    LANGUAGE,
    REFERENCE_SECONDS,
    SAMPLE_RATE,
    TENANT,
    EngineThread,
    StreamRun,
    engine_model_and_prompt,
    engine_stream,
    make_profile,
    service_stream,
    synthesis_config,
)
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice.tts.v1 import tts_service_pb2_grpc as tts_grpc
from voice_common.audio.encoding import to_s16
from voice_testing.media_files import speechlike
from voice_testing.one_shot_speech import package_greedy_audio, pcm16_steps, whole_decode_audio

if TYPE_CHECKING:  # imports torch and qwen_tts: only when the decoder is measured
    from tools.streaming_decoder_timing import DecoderTiming

WARMUP_REFERENCE_TEXT = "Another voice, only to warm the prompt builder up."
SHORT_TEXT = "Good morning! This sentence is spoken by the service and by the engine, with the same seed."
LONG_TEXT_CHARS = 300
FRAMES_PER_PIECE = 60  # 4.8 s of audio per piece
# The time-to-first-audio runs stop sooner (first chunk after 4 frames, then 12, then the rest): the first chunk does
# not depend on the length, and shorter runs leave time for more of them (the figure is a ratio of two medians).
TTFA_FRAMES = 24
SEED = 1234
CONCURRENT = 8
# Math threads for the engine and the service alike (see the module docstring).
THREADS = int(os.environ.get("BENCH_TTS_THREADS", "1"))

TTFA_GOAL = 1.10
# Milliseconds the service adds to the tiny model's first chunk: on the fastest first audio published for the 0.6B
# model (152 ms, an RTX 4090 with CUDA graphs; docs/capacity.md), 5 ms would keep the ratio within 1.04.
TINY_ADDED_MS_GOAL = 5.0
LONG_TEXT_GOAL = 0.15
PROMPT_GOAL = 20.0
CONCURRENCY_GOAL = 0.5
PARITY_GOAL = 1.0  # PCM16 steps
DECODER_GOAL = 1.2
# Greedy stream-vs-one-shot runs: reference (4 s, 50 frames) + 150 generated stay under the package's 300-frame
# decode chunk, so its one-shot audio is one whole decode; the long run (+ 300) goes past it.
PARITY_FRAMES = 150
PARITY_LONG_FRAMES = 300

FIGURE_NAMES = (
    "tts_stream_ttfa_vs_engine_ratio",
    "tts_long_text_first_chunk_vs_total_ratio",
    "tts_prompt_cold_vs_warm_ratio",
    "tts_prompt_cold_vs_store_ratio",
    "tts_concurrent8_vs_sequential8_ratio",
    "tts_stream_vs_one_shot_max_pcm16_steps",
    "tts_streaming_decoder_vs_whole_time_ratio",
    "tts_stream_ttfa_tiny_added_ms",
)


def long_text(chars: int = LONG_TEXT_CHARS) -> str:
    """Exactly ``chars`` characters of plain sentences, ending with a full stop."""
    sentences = (
        "The morning train left the station on time, carrying commuters through the quiet valley. "
        "Outside the windows, fields of wheat moved in the wind while the sun climbed above the hills. "
        "A conductor walked slowly along the aisle, checking tickets and greeting the regular passengers. "
        "By the time the city appeared on the horizon, most people had finished their coffee and papers. "
    )
    text = sentences * (chars // len(sentences) + 1)
    return text[: chars - 1] + "."


@dataclass
class Plan:
    ttfa_runs: int = 21
    released_shape_runs: int = 7
    long_runs: int = 3
    prompt_runs: int = 5
    concurrency_runs: int = 2
    warmups: int = 2
    decoder_frames: int = (
        48  # the released decoder's shape on the CPU: about 1 s of compute per second of audio
    )
    decoder_repeats: int = 2

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(
                ttfa_runs=5,
                released_shape_runs=2,
                long_runs=1,
                prompt_runs=2,
                concurrency_runs=1,
                warmups=1,
                decoder_frames=24,
                decoder_repeats=1,
            )
        return cls()


@dataclass
class Parity:
    """Greedy SynthesizeStream against one-shot decodes of the same codes, in PCM16 steps (max |difference|)."""

    frames: int
    reference_frames: int
    vs_package: int  # against qwen_tts's generate_voice_clone (one whole decode below 300 frames in all)
    long_frames: int
    long_vs_whole: int  # past 300 frames: against one whole decode of reference + generated codes
    package_long_vs_whole: int  # the package's own 300-frame chunked decode against that whole decode


@dataclass
class PromptTimings:
    cold_s: list[float] = field(default_factory=list)
    memory_s: list[float] = field(default_factory=list)
    store_s: list[float] = field(default_factory=list)
    warmup_s: float = 0.0
    mode: str = ""


@dataclass
class TtsResult:
    plan: Plan
    threads: int
    model_dir: str = ""
    short_chars: int = len(SHORT_TEXT)
    long_chars: int = 0
    long_pieces: int = 0
    service_ttfa: list[StreamRun] = field(default_factory=list)
    engine_ttfa: list[StreamRun] = field(default_factory=list)
    same_audio: bool | None = None
    # A bare grpc.aio round trip (the echo server): the transport floor inside the service's time to first audio.
    round_trip_s: list[float] = field(default_factory=list)
    long_runs: list[StreamRun] = field(default_factory=list)
    prompt: PromptTimings = field(default_factory=PromptTimings)
    sequential_s: list[float] = field(default_factory=list)
    concurrent_s: list[float] = field(default_factory=list)
    concurrency_audio_s: float = 0.0
    parity: Parity | None = None
    decoder: DecoderTiming | None = None  # the released decoder's shape, random weights
    released_shape: ReleasedShapeRuns | None = None
    tiny_decoder: DecoderTiming | None = None
    server_log: str = ""

    def figures(self) -> list[Figure]:
        out: list[Figure] = []
        released = self.released_shape
        tiny_ratio = None
        if self.service_ttfa and self.engine_ttfa:
            # Each service run against the engine run right after it: the pair shares the machine's state of the
            # moment (on a shared machine the engine's own time drifts by half between runs of the bench).
            tiny_ratio = _paired_ratio(self.service_ttfa, self.engine_ttfa)
        if released is not None and released.service and released.engine:
            service = median([run.first_s for run in released.service])
            engine = median([run.first_s for run in released.engine])
            run = released.service[0]
            out.append(
                Figure(
                    FIGURE_NAMES[0],
                    _paired_ratio(released.service, released.engine),
                    "<=",
                    TTFA_GOAL,
                    f"the released 0.6B shape with random weights, median of {len(released.service)} paired "
                    f"ratios; SynthesizeStream first audio {service * 1e3:.0f} ms vs engine first chunk "
                    f"{engine * 1e3:.0f} ms (medians); {self.short_chars} chars, {run.frames} frames, same audio: "
                    f"{_yes_no(released.same_audio)}; the tiny "
                    f"model's paired ratio {tiny_ratio if tiny_ratio is not None else float('nan'):.2f}",
                )
            )
        if self.service_ttfa and self.engine_ttfa:
            service = median([run.first_s for run in self.service_ttfa])
            engine = median([run.first_s for run in self.engine_ttfa])
            added = median(
                [s.first_s - e.first_s for s, e in zip(self.service_ttfa, self.engine_ttfa, strict=True)]
            )
            run = self.service_ttfa[0]
            out.append(
                Figure(
                    FIGURE_NAMES[7],
                    added * 1e3,
                    "<=",
                    TINY_ADDED_MS_GOAL,
                    f"tiny model, median of {len(self.service_ttfa)} paired differences; SynthesizeStream first "
                    f"audio {service * 1e3:.1f} ms vs engine first chunk {engine * 1e3:.1f} ms (medians); a bare "
                    f"grpc.aio round trip "
                    f"{median(self.round_trip_s) * 1e3 if self.round_trip_s else float('nan'):.1f} ms; "
                    f"{self.short_chars} chars, {run.frames} frames, {run.audio_s:.2f} s audio, same audio: "
                    f"{_yes_no(self.same_audio)}",
                )
            )
        if self.long_runs:
            first = median([run.first_s for run in self.long_runs])
            total = median([run.total_s for run in self.long_runs])
            run = self.long_runs[0]
            out.append(
                Figure(
                    FIGURE_NAMES[1],
                    first / total,
                    "<=",
                    LONG_TEXT_GOAL,
                    f"first audio {first * 1e3:.0f} ms of {total * 1e3:.0f} ms, medians of "
                    f"{len(self.long_runs)}; {self.long_chars} chars in {self.long_pieces} pieces, "
                    f"{run.frames} frames, {run.audio_s:.2f} s audio",
                )
            )
        prompt = self.prompt
        if prompt.cold_s and prompt.memory_s:
            cold = median(prompt.cold_s)
            memory = median(prompt.memory_s)
            stored = median(prompt.store_s)
            out.append(
                Figure(
                    FIGURE_NAMES[2],
                    cold / memory,
                    ">=",
                    PROMPT_GOAL,
                    f"full miss (build {REFERENCE_SECONDS:.0f} s {prompt.mode} prompt) {cold * 1e3:.1f} ms vs "
                    f"memory hit {memory * 1e6:.1f} us, medians of {len(prompt.cold_s)}",
                )
            )
            out.append(
                Figure(
                    FIGURE_NAMES[3],
                    cold / stored,
                    ">=",
                    1.0,
                    f"no goal in the issue: a store hit must beat a rebuild; full miss {cold * 1e3:.1f} ms vs "
                    f"object-store hit with empty memory {stored * 1e3:.2f} ms",
                )
            )
        if self.sequential_s and self.concurrent_s:
            sequential = median(self.sequential_s)
            concurrent = median(self.concurrent_s)
            out.append(
                Figure(
                    FIGURE_NAMES[4],
                    concurrent / sequential,
                    "<=",
                    CONCURRENCY_GOAL,
                    f"{CONCURRENT} Synthesize at once {concurrent * 1e3:.0f} ms vs one after another "
                    f"{sequential * 1e3:.0f} ms, medians of {len(self.sequential_s)}; each "
                    f"{FRAMES_PER_PIECE} frames, {self.concurrency_audio_s:.1f} s audio in all",
                )
            )
        parity = self.parity
        if parity is not None:
            out.append(
                Figure(
                    FIGURE_NAMES[5],
                    float(parity.vs_package),
                    "<=",
                    PARITY_GOAL,
                    f"greedy SynthesizeStream vs qwen_tts generate_voice_clone, {parity.frames} frames after "
                    f"{parity.reference_frames} reference frames; past 300 frames ({parity.long_frames}): stream "
                    f"vs one whole decode {parity.long_vs_whole} steps, the package's chunked decode vs it "
                    f"{parity.package_long_vs_whole}",
                )
            )
        decoder, tiny = self.decoder, self.tiny_decoder
        if decoder is not None and tiny is not None:
            out.append(
                Figure(
                    FIGURE_NAMES[6],
                    decoder.streamed_vs_whole,
                    "<=",
                    DECODER_GOAL,
                    f"released decoder's shape (random weights), {decoder.frames} frames in the service's "
                    f"chunks: streamed {decoder.streamed_s / decoder.audio_s * 1e3:.0f} ms vs whole "
                    f"{decoder.whole_s / decoder.audio_s * 1e3:.0f} ms per s of audio, max difference "
                    f"{decoder.max_difference:.1e}; the old 25-frame left context ÷ whole "
                    f"{decoder.context_vs_whole:.2f} (max difference {decoder.context_max_difference:.1e}); "
                    f"tiny model ÷ whole {tiny.streamed_vs_whole:.2f}, old {tiny.context_vs_whole:.2f}",
                )
            )
        return out


def _paired_ratio(service: list[StreamRun], engine: list[StreamRun]) -> float:
    """The median of each service run's time to first audio over the engine run right after it."""
    return median([s.first_s / e.first_s for s, e in zip(service, engine, strict=True)])


def _yes_no(value: bool | None) -> str:
    return "not compared" if value is None else ("yes" if value else "NO")


def _ms(values: Sequence[float]) -> tuple[str, str, str]:
    if not values:
        return ("-", "-", "-")
    return (
        format_value(median(values) * 1e3),
        format_value(min(values) * 1e3),
        format_value(max(values) * 1e3),
    )


def report(result: TtsResult) -> str:
    rows: list[tuple[object, ...]] = []

    def stream_rows(label: str, runs: list[StreamRun]) -> None:
        if not runs:
            return
        frames, audio = runs[0].frames, runs[0].audio_s
        rows.append((f"{label}: first audio", *_ms([r.first_s for r in runs]), len(runs), frames, audio))
        server = [r.server_first_s for r in runs if r.server_first_s is not None]
        if server:
            rows.append((f"{label}: first audio, server's summary", *_ms(server), len(server), frames, audio))
        rows.append((f"{label}: whole", *_ms([r.total_s for r in runs]), len(runs), frames, audio))

    stream_rows(f"SynthesizeStream, {result.short_chars} chars", result.service_ttfa)
    stream_rows(f"engine stream(), {result.short_chars} chars", result.engine_ttfa)
    if result.round_trip_s:
        rows.append(
            (
                "  a bare grpc.aio round trip (echo server)",
                *_ms(result.round_trip_s),
                len(result.round_trip_s),
                "-",
                "-",
            )
        )
    stream_rows(f"SynthesizeStream, {result.long_chars} chars", result.long_runs)
    released = result.released_shape
    if released is not None:
        stream_rows(f"0.6B shape, SynthesizeStream, {result.short_chars} chars", released.service)
        stream_rows(f"0.6B shape, engine stream(), {result.short_chars} chars", released.engine)
    prompt = result.prompt
    if prompt.cold_s:
        runs = len(prompt.cold_s)
        rows.append(("prompt: full miss (build + put)", *_ms(prompt.cold_s), runs, "-", REFERENCE_SECONDS))
        rows.append(("prompt: object-store hit", *_ms(prompt.store_s), runs, "-", REFERENCE_SECONDS))
        rows.append(
            ("prompt: memory hit", *_ms(prompt.memory_s), len(prompt.memory_s), "-", REFERENCE_SECONDS)
        )
    if result.sequential_s:
        n = len(result.sequential_s)
        audio = result.concurrency_audio_s
        rows.append((f"{CONCURRENT} Synthesize one after another", *_ms(result.sequential_s), n, "-", audio))
        rows.append((f"{CONCURRENT} Synthesize at once", *_ms(result.concurrent_s), n, "-", audio))
    title = (
        f"TTS on the tiny never-EOS model ({result.model_dir}), CPU, {result.threads} math thread(s) in the "
        f"service and the engine; first chunk after 4 frames"
    )
    headers = ["what", "median ms", "min ms", "max ms", "runs", "frames", "audio s"]
    table = render_table(title, headers, rows)
    if prompt.warmup_s:
        table += f"\nprompt warm-up on another clip (not measured): {prompt.warmup_s * 1e3:.0f} ms"
    return table


async def _synthesize(stub: tts_grpc.TtsServiceStub, profile_id: str, text: str, seed: int) -> float:
    """One unary Synthesize; the audio seconds it returned."""
    request = tts_pb.SynthesizeRequest(config=synthesis_config(profile_id, seed, FRAMES_PER_PIECE), text=text)
    try:
        response = await stub.Synthesize(request, metadata=tenant_metadata(TENANT), timeout=600)
    except aio.AioRpcError as error:
        raise BenchError(f"Synthesize failed: {describe_rpc_error(error)}") from error
    return len(response.audio) / 2 / SAMPLE_RATE


async def _prompt_timings(
    engine: EngineThread, model: Any, model_id: str, clips: list[Any], store_dir: Path, runs: int
) -> PromptTimings:
    import torch

    from voice_common.object_store import FilesystemObjectStore
    from voice_common.prompt_keys import PromptOwner
    from voice_tts.prompts import (
        PromptCache,
        ReferenceClip,
        combine_references,
        create_prompt,
        prompt_cache_key,
    )

    timings = PromptTimings()
    reference = combine_references(clips)
    x_vector_only = reference.transcript is None
    timings.mode = "x-vector" if x_vector_only else "ICL"
    other = ReferenceClip(
        audio=speechlike(REFERENCE_SECONDS, rate=SAMPLE_RATE, seed=11),
        transcript=WARMUP_REFERENCE_TEXT,
        sha256=uuid.uuid4().hex,
    )
    started = time.perf_counter()
    await engine.run(lambda: create_prompt(model, other))
    timings.warmup_s = time.perf_counter() - started

    def build() -> Any:
        # PromptCache builds in asyncio's default executor: give that thread the same math threads.
        previous = torch.get_num_threads()
        torch.set_num_threads(THREADS)
        try:
            return create_prompt(model, reference)
        finally:
            torch.set_num_threads(previous)

    store = FilesystemObjectStore(store_dir)
    owner = PromptOwner("bench")  # the prompts of a tenant's inline references
    try:
        for run in range(runs):
            # A model id of its own per run: a new key, so the first get is a full miss (store miss, build, put).
            run_model_id = f"{model_id}#bench-{run}-{uuid.uuid4().hex[:8]}"
            key = prompt_cache_key(run_model_id, clips)
            cache = PromptCache(store, run_model_id)
            started = time.perf_counter()
            _, source = await cache.get_or_create(owner, key, build)
            timings.cold_s.append(time.perf_counter() - started)
            if source != "built":
                raise BenchError(f"the prompt cache answered a fresh key from {source}")
            for _ in range(50):
                started = time.perf_counter()
                _, source = await cache.get_or_create(owner, key, build)
                timings.memory_s.append(time.perf_counter() - started)
            if source != "memory":
                raise BenchError(f"a repeated prompt came from {source}, not memory")
            fresh = PromptCache(store, run_model_id)
            started = time.perf_counter()
            _, source = await fresh.get_or_create(owner, key, build)
            timings.store_s.append(time.perf_counter() - started)
            if source != "store":
                raise BenchError(f"a stored prompt came from {source}, not the store")
    finally:
        await store.close()
    return timings


async def run_tts(
    profiles: ProfileService, workdir: Path, plan: Plan, progress: Callable[[str], None]
) -> TtsResult:
    """Every TTS measurement (see the module docstring) against a TTS service started here beside ``profiles``."""
    from tools.tiny_model import build_tiny_model
    from voice_tts.synthesis_types import SynthesisLimits
    from voice_tts.text_segments import split_text

    result = TtsResult(plan, THREADS)
    text_long = long_text()
    result.long_chars = len(text_long)
    result.long_pieces = len(split_text(text_long, SynthesisLimits().max_piece_chars))
    engine = EngineThread(THREADS)
    try:
        progress("building the tiny never-EOS model")
        model_dir = await engine.run(
            lambda: build_tiny_model(workdir / "tiny-qwen3-tts-steady", seed=0, never_eos=True)
        )
        result.model_dir = model_dir.name
        profile_id = await make_profile(profiles)
        progress(f"starting the TTS service ({THREADS} math thread(s))")
        async with tts_service(profiles, workdir, model_dir, {"OMP_NUM_THREADS": str(THREADS)}) as tts:
            progress(
                f"TTS service SERVING at {tts.address} (pid {tts.process.pid}); loading the model here too"
            )
            model, clips, prompt = await engine_model_and_prompt(engine, tts.model, profiles, profile_id)
            async with echo_server() as echo, aio.insecure_channel(echo.address) as channel:
                call = channel.unary_unary(ECHO_METHOD, None, None)

                async def round_trip() -> None:
                    await call(b"x" * 64, timeout=10)

                await _measure(
                    tts, engine, model, prompt, profile_id, text_long, plan, result, progress, round_trip
                )
            progress(f"prompt cache: {plan.prompt_runs} full misses, memory and store hits")
            result.prompt = await _prompt_timings(
                engine, model, tts.model, clips, workdir / "prompt-bench-objects", plan.prompt_runs
            )
            progress(f"the speech decoder: streamed ÷ whole ({plan.decoder_frames} frames, released shape)")
            result.decoder, result.tiny_decoder = await _decoder_timings(engine, model, plan)
            tts.process.check_alive("after the TTS benchmarks")
            result.server_log = tts.process.output()
        result.released_shape = await measure_released_shape_ttfa(
            profiles,
            workdir,
            engine,
            THREADS,
            profile_id,
            SHORT_TEXT,
            SEED,
            runs=plan.released_shape_runs,
            warmups=1,
            progress=progress,
        )
    finally:
        engine.close()
    return result


async def _measure(
    tts: TtsService,
    engine: EngineThread,
    model: Any,
    prompt: Any,
    profile_id: str,
    text_long: str,
    plan: Plan,
    result: TtsResult,
    progress: Callable[[str], None],
    round_trip: Callable[[], Awaitable[None]],
) -> None:
    async with aio.insecure_channel(tts.address) as channel:
        stub = tts_grpc.TtsServiceStub(channel)
        progress(
            f"warming up: {plan.warmups} SynthesizeStream and engine run(s) (the first builds the prompt)"
        )
        for _ in range(plan.warmups):
            await service_stream(stub, profile_id, SHORT_TEXT, SEED, TTFA_FRAMES)
            await engine.run(lambda: engine_stream(model, prompt, SHORT_TEXT, SEED, TTFA_FRAMES))

        progress(f"time to first audio: {plan.ttfa_runs} SynthesizeStream and engine runs, alternating")
        for _ in range(plan.ttfa_runs):
            result.service_ttfa.append(await service_stream(stub, profile_id, SHORT_TEXT, SEED, TTFA_FRAMES))
            result.engine_ttfa.append(
                await engine.run(lambda: engine_stream(model, prompt, SHORT_TEXT, SEED, TTFA_FRAMES))
            )
            started = time.perf_counter()
            await round_trip()
            result.round_trip_s.append(time.perf_counter() - started)
        result.same_audio = result.service_ttfa[0].pcm16 == result.engine_ttfa[0].pcm16

        progress(f"long text: {plan.long_runs} SynthesizeStream of {len(text_long)} characters")
        for _ in range(plan.long_runs):
            result.long_runs.append(await service_stream(stub, profile_id, text_long, SEED, FRAMES_PER_PIECE))

        seeds = [SEED + 100 + index for index in range(CONCURRENT)]
        progress(f"{CONCURRENT} Synthesize one after another, then at once; {plan.concurrency_runs} round(s)")
        for _ in range(plan.concurrency_runs):
            started = time.perf_counter()
            audio = [await _synthesize(stub, profile_id, SHORT_TEXT, seed) for seed in seeds]
            result.sequential_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            audio_at_once = await asyncio.gather(
                *(_synthesize(stub, profile_id, SHORT_TEXT, seed) for seed in seeds)
            )
            result.concurrent_s.append(time.perf_counter() - started)
            result.concurrency_audio_s = sum(audio)
            if abs(sum(audio_at_once) - sum(audio)) > 1e-6:
                raise BenchError(
                    f"concurrent requests made {sum(audio_at_once):.2f} s of audio, sequential {sum(audio):.2f} s"
                )

        progress(f"greedy streams against one-shot decodes ({PARITY_FRAMES} and {PARITY_LONG_FRAMES} frames)")
        result.parity = await _parity(stub, engine, model, prompt, profile_id)


async def _parity(
    stub: tts_grpc.TtsServiceStub, engine: EngineThread, model: Any, prompt: Any, profile_id: str
) -> Parity:
    """Greedy SynthesizeStream (default chunking) against qwen_tts's one-shot ``generate_voice_clone`` on the same
    prompt, and past the package's 300-frame decode chunk against one whole decode of the same codes."""
    from voice_tts.synthesis_types import model_language

    language = model_language(LANGUAGE)
    assert language is not None

    def package(frames: int) -> np.ndarray:
        return package_greedy_audio(model, SHORT_TEXT, language, prompt, frames)

    def whole(frames: int) -> np.ndarray:
        return whole_decode_audio(model, SHORT_TEXT, language, prompt, frames)

    def streamed(run: StreamRun, frames: int) -> np.ndarray:
        pcm = np.frombuffer(run.pcm16, dtype="<i2")
        if run.frames != frames:
            raise BenchError(f"the greedy stream made {run.frames} frames, not {frames}")
        return pcm

    short = streamed(
        await service_stream(stub, profile_id, SHORT_TEXT, SEED, PARITY_FRAMES, greedy=True), PARITY_FRAMES
    )
    package_short = await engine.run(lambda: package(PARITY_FRAMES))
    long = streamed(
        await service_stream(stub, profile_id, SHORT_TEXT, SEED, PARITY_LONG_FRAMES, greedy=True),
        PARITY_LONG_FRAMES,
    )
    whole_long = await engine.run(lambda: whole(PARITY_LONG_FRAMES))
    package_long = await engine.run(lambda: package(PARITY_LONG_FRAMES))
    return Parity(
        frames=PARITY_FRAMES,
        reference_frames=0 if prompt.ref_code is None else int(prompt.ref_code.shape[0]),
        vs_package=pcm16_steps(package_short, short),
        long_frames=PARITY_LONG_FRAMES,
        long_vs_whole=pcm16_steps(whole_long, long),
        package_long_vs_whole=pcm16_steps(package_long, to_s16(whole_long)),
    )


async def _decoder_timings(
    engine: EngineThread, model: Any, plan: Plan
) -> tuple[DecoderTiming, DecoderTiming]:
    """The speech decoder streamed in the service's chunks ÷ one whole decode: the released decoder's shape
    (random weights; the tiny decoder's 8-64 channels make every call's fixed cost dominate) and the tiny model's."""
    from tools.streaming_decoder_timing import chunk_bounds, real_config_decoder, time_decoder
    from voice_tts.speech_model import SpeechModel
    from voice_tts.synthesis_types import SynthesisLimits

    limits = SynthesisLimits()

    def bounds(frames: int) -> list[tuple[int, int]]:
        return chunk_bounds(frames, limits.first_chunk_frames, limits.chunk_frames)

    def released() -> DecoderTiming:
        decoder = real_config_decoder()
        return time_decoder(decoder, plan.decoder_frames, bounds(plan.decoder_frames), plan.decoder_repeats)

    def tiny() -> DecoderTiming:
        decoder = SpeechModel.of(model).decoder
        return time_decoder(decoder, FRAMES_PER_PIECE * 2, bounds(FRAMES_PER_PIECE * 2), 3)

    return await engine.run(released), await engine.run(tiny)
