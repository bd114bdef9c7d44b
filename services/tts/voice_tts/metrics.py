"""The TTS service's Prometheus metrics (next to the gRPC ones every service has, in voice_common.observability).

Collectors are process-wide: defined here once, at import, so that several apps in one process (the tests) share
them instead of registering twice. ``/metrics`` is served by ``voice_common.observability.serve_metrics``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from voice_common import observability

# First audio is meant to come within a few hundred milliseconds on a GPU; seconds on a small CPU.
TIME_TO_FIRST_AUDIO = Histogram(
    "voice_tts_time_to_first_audio_seconds",
    "From the arrival of a synthesis RPC to its first audio bytes (including voice-prompt preparation)",
    ["rpc"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
REAL_TIME_FACTOR = Histogram(
    "voice_tts_real_time_factor",
    "Synthesis time / audio duration of each completed synthesis (below 1: faster than real time)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20),
)
AUDIO_SECONDS = Counter("voice_tts_audio_seconds", "Seconds of audio synthesized (completed syntheses)")
QUEUE_DEPTH = Gauge(
    "voice_tts_queue_depth", "Synthesis requests admitted and not finished (waiting + running)"
)
PROMPT_CACHE_REQUESTS = Counter(
    "voice_tts_prompt_cache_requests",
    "Voice-prompt lookups: memory_hit, store_hit (object store), or miss (built from the reference audio)",
    ["result"],
)
MODEL_LOAD_SECONDS = Gauge("voice_tts_model_load_seconds", "How long the last successful model load took")
MODEL_LOADS = Counter(
    "voice_tts_model_loads", "Model loads that ended, by result (ready or failed)", ["result"]
)
BATCH_SIZE = Histogram(
    "voice_tts_batch_size",
    "Requests decoded together in one model step",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)


def track_queue_depth(engine: Any) -> None:
    """Report ``engine.queue_depth`` on voice_tts_queue_depth at every scrape (one per process)."""
    observability.track_queue_depth(QUEUE_DEPTH, engine)


# Every label value from the start, so dashboards and rate() see zeros instead of missing series.
RPCS = ("Synthesize", "SynthesizeStream", "SynthesizeDuplex")
for _rpc in RPCS:
    TIME_TO_FIRST_AUDIO.labels(rpc=_rpc)
for _result in ("memory_hit", "store_hit", "miss"):
    PROMPT_CACHE_REQUESTS.labels(result=_result)
for _result in ("ready", "failed"):
    MODEL_LOADS.labels(result=_result)
