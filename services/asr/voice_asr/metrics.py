"""The ASR service's Prometheus metrics (next to the gRPC ones every service has, in voice_common.observability).

Collectors are process-wide: defined here once, at import, so that several apps in one process (the tests) share
them instead of registering twice.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from voice_asr.transcript import TranscriptionResult
from voice_common import observability

# tiny.en on two CPU threads: about 0.05-0.1 on long files, 0.2 on a 5 s clip (each call pays a 30 s window).
REAL_TIME_FACTOR = Histogram(
    "voice_asr_real_time_factor",
    "Processing time / audio duration of each completed transcription (below 1: faster than real time)",
    buckets=(0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
)
QUEUE_WAIT = Histogram(
    "voice_asr_queue_wait_seconds",
    "From admission to the start of a transcription (including a model load on first use)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
AUDIO_SECONDS = Counter("voice_asr_audio_seconds", "Seconds of audio transcribed (completed transcriptions)")
QUEUE_DEPTH = Gauge(
    "voice_asr_queue_depth", "Transcription requests admitted and not finished (waiting + running)"
)
SHORT_WINDOW_PASSES = Counter(
    "voice_asr_short_window_passes",
    "Decodes with a short encoder window (live passes), by result: kept, or redone with the full window because "
    "the result repeated itself",
    ["result"],
)
MODEL_LOAD_SECONDS = Gauge("voice_asr_model_load_seconds", "How long the last successful model load took")
MODEL_LOADS = Counter(
    "voice_asr_model_loads", "Model loads that ended, by result (ready or failed)", ["result"]
)


def observe(result: TranscriptionResult) -> None:
    """Record one completed transcription (the transcriber's ``observe`` hook)."""
    AUDIO_SECONDS.inc(result.transcript.duration_seconds)
    QUEUE_WAIT.observe(result.timings.queue_wait_s)
    if result.transcript.duration_seconds > 0:
        REAL_TIME_FACTOR.observe(result.timings.real_time_factor)


def track_queue_depth(transcriber: Any) -> None:
    """Report ``transcriber.queue_depth`` on voice_asr_queue_depth at every scrape (one per process)."""
    observability.track_queue_depth(QUEUE_DEPTH, transcriber)


# Every label value from the start, so dashboards and rate() see zeros instead of missing series.
for _result in ("ready", "failed"):
    MODEL_LOADS.labels(result=_result)
for _result in ("kept", "redone"):
    SHORT_WINDOW_PASSES.labels(result=_result)
