"""What the TTS's ``speed`` costs in CPU: Rubber Band's time-stretch (through pedalboard,
:mod:`voice_tts.time_stretch`) on recorded speech, in this process, one thread, no servers.

The recording is English sentences of ``tests/speech`` (flite's voices, :data:`voice_testing.speech.MANIFEST`) decoded
with :func:`voice_common.audio.decode_audio` at the TTS's 24 kHz and joined. The streaming stretcher
(:class:`~voice_tts.time_stretch.StreamingTimeStretcher`, what a SynthesizeStream at a speed other than 1 runs) is fed
the chunks the TTS makes: a first chunk of ``first_chunk_frames`` codec frames, then ``chunk_frames`` each
(:class:`voice_tts.synthesis_types.SynthesisLimits`' defaults, 4 and 12 frames of 1920 samples), then flushed.

Figure:

* ``speed_stretch_realtime_factor``: CPU seconds (``time.process_time``: every thread of this process, so a
  stretcher that used helper threads would be counted whole) per second of stretched audio produced, streaming at
  speed 1.25; median of the runs. The goal, 0.1, keeps the stretch a small share of a CPU synthesis's own time and
  far below real time on the thread that also runs the model. The table adds, without goals, the whole-buffer stretch
  (:func:`~voice_tts.time_stretch.time_stretch` on the whole recording) and speeds 0.5 and 2.0, the CPU per second of
  input as well, the thread's own CPU time (equal to the process's when the stretch is single-threaded) and the
  output's length against ``len / speed``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.common import Figure, format_value, median, render_table
from voice_common.audio import decode_audio
from voice_testing.speech import CORPUS_DIR, MANIFEST
from voice_tts.synthesis_types import SynthesisLimits
from voice_tts.time_stretch import StreamingTimeStretcher, time_stretch

SAMPLE_RATE = 24_000  # the TTS's
SAMPLES_PER_FRAME = 1920  # one codec frame at 12.5 Hz
SPEED = 1.25  # the figure's
DETAIL_SPEEDS = (0.5, 2.0)
REALTIME_FACTOR_GOAL = 0.1
STREAMING = "streaming"
WHOLE = "whole buffer"

FIGURE_NAMES = ("speed_stretch_realtime_factor",)


@dataclass
class Plan:
    sentences: int = 16  # English recordings joined (about 60 s of speech)
    runs: int = 5  # per speed and way, after one unmeasured run

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        return cls(sentences=4, runs=1) if quick else cls()


@dataclass
class StretchRuns:
    way: str  # STREAMING or WHOLE
    speed: float
    process_cpu_s: list[float] = field(default_factory=list)
    thread_cpu_s: list[float] = field(default_factory=list)
    output_samples: int = 0

    def realtime_factor(self, output_s: float) -> float:
        return median(self.process_cpu_s) / output_s


@dataclass
class StretchResult:
    plan: Plan
    input_samples: int = 0
    chunks: int = 0
    runs: list[StretchRuns] = field(default_factory=list)

    @property
    def input_s(self) -> float:
        return self.input_samples / SAMPLE_RATE

    def output_s(self, runs: StretchRuns) -> float:
        return runs.output_samples / SAMPLE_RATE

    def figures(self) -> list[Figure]:
        for runs in self.runs:
            if runs.way == STREAMING and runs.speed == SPEED:
                output_s = self.output_s(runs)
                return [
                    Figure(
                        FIGURE_NAMES[0],
                        runs.realtime_factor(output_s),
                        "<=",
                        REALTIME_FACTOR_GOAL,
                        f"StreamingTimeStretcher at speed {format_value(SPEED)}: "
                        f"{median(runs.process_cpu_s) * 1e3:.1f} ms CPU (thread "
                        f"{median(runs.thread_cpu_s) * 1e3:.1f} ms) for {output_s:.2f} s of audio out of "
                        f"{self.input_s:.2f} s of recorded speech in {self.chunks} TTS-sized chunks, median of "
                        f"{len(runs.process_cpu_s)}",
                    )
                ]
        return []


def report(result: StretchResult) -> str:
    rows = []
    for runs in result.runs:
        output_s = result.output_s(runs)
        rows.append(
            (
                runs.way,
                f"{runs.speed:g}",
                runs.realtime_factor(output_s),
                median(runs.process_cpu_s) / result.input_s,
                median(runs.process_cpu_s) * 1e3,
                median(runs.thread_cpu_s) * 1e3,
                f"{100 * runs.output_samples * runs.speed / result.input_samples:.2f}%",
                len(runs.process_cpu_s),
            )
        )
    limits = SynthesisLimits()
    return render_table(
        f"Speed: Rubber Band time-stretch (pedalboard) of {result.input_s:.1f} s of recorded speech at "
        f"{SAMPLE_RATE} Hz, one thread; streaming in the TTS's chunks ({limits.first_chunk_frames} then "
        f"{limits.chunk_frames} frames, {result.chunks} chunks)",
        ["way", "speed", "CPU s / s out", "CPU s / s in", "CPU ms", "thread ms", "out / (in/speed)", "runs"],
        rows,
    )


def recording(sentences: int) -> np.ndarray:
    """``sentences`` English recordings of ``tests/speech`` (in the manifest's order), joined, at 24 kHz."""
    entries = [entry for entry in json.loads(MANIFEST.read_text()) if entry["language"] == "en"][:sentences]
    parts = [
        decode_audio((CORPUS_DIR / entry["file"]).read_bytes(), target_rate=SAMPLE_RATE).samples
        for entry in entries
    ]
    return np.concatenate(parts).astype(np.float32)


def tts_chunks(samples: np.ndarray) -> list[np.ndarray]:
    """``samples`` cut as a SynthesizeStream's audio arrives: the first chunk, then the later ones."""
    limits = SynthesisLimits()
    first = limits.first_chunk_frames * SAMPLES_PER_FRAME
    size = limits.chunk_frames * SAMPLES_PER_FRAME
    chunks = [samples[:first]]
    chunks += [samples[start : start + size] for start in range(first, samples.size, size)]
    return [chunk for chunk in chunks if chunk.size]


def _streaming(chunks: list[np.ndarray], speed: float) -> int:
    stretcher = StreamingTimeStretcher(speed, SAMPLE_RATE)
    produced = sum(stretcher.process(chunk).size for chunk in chunks)
    return produced + stretcher.flush().size


def _whole(samples: np.ndarray, speed: float) -> int:
    return time_stretch(samples, SAMPLE_RATE, speed).size


def _timed(work: Callable[[], int], runs: StretchRuns, count: int) -> None:
    work()  # unmeasured: first calls into Rubber Band, numpy's buffers
    for _ in range(count):
        process_started, thread_started = time.process_time(), time.thread_time()
        runs.output_samples = work()
        runs.thread_cpu_s.append(time.thread_time() - thread_started)
        runs.process_cpu_s.append(time.process_time() - process_started)


def run_speed_stretch(plan: Plan, progress: Callable[[str], None]) -> StretchResult:
    """Every way and speed (see the module docstring); blocking, call it off the event loop."""
    samples = recording(plan.sentences)
    chunks = tts_chunks(samples)
    result = StretchResult(plan, samples.size, len(chunks))
    progress(
        f"speed: time-stretch of {result.input_s:.1f} s of speech, {plan.runs} run(s) per speed "
        f"({', '.join(f'{s:g}' for s in (SPEED, *DETAIL_SPEEDS))}), streaming and whole"
    )
    for speed in (SPEED, *DETAIL_SPEEDS):
        for way in (STREAMING, WHOLE):
            runs = StretchRuns(way, speed)
            if way == STREAMING:
                _timed(functools.partial(_streaming, chunks, speed), runs, plan.runs)
            else:
                _timed(functools.partial(_whole, samples, speed), runs, plan.runs)
            result.runs.append(runs)
    return result
