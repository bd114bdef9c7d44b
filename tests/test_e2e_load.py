"""End to end, short: the whole platform under mixed load, every client going through the gateway.

The scenario is ``python -m bench --only load`` (:mod:`bench.load`) scaled down to a few clients for ten seconds:
real processes on loopback (PostgreSQL, an S3 server (moto), the profile service, TTS on the tiny model, ASR on
tiny.en, the gateway with API keys and the internal token), TTS streams, profile calls and live ASR streams at
once. The TTS queue is set below the number of TTS clients, so refusals with a retry hint happen and are honoured;
anything else that fails is an error. No latency is asserted here: the figures are the benchmark's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.load import MIRRORED, PROCESSES, Plan, report, run_load

pytestmark = pytest.mark.slow

# Far above what the processes use (about 75 MB gateway, 145 MB profiles, 800 MB TTS, 450 MB ASR under the full
# load): a leak or a buffer that follows the load would cross these, a busy allocator would not.
RSS_CEILINGS_MB = {"gateway": 500.0, "profiles": 800.0, "tts": 3000.0, "asr": 2000.0}
TTS_QUEUE_FULL = "TTS queue full (TTS_MAX_QUEUE)"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def test_mixed_load_through_the_gateway_gets_no_unexpected_error(tmp_path: Path) -> None:
    plan = Plan(
        tts_clients=8,
        profile_clients=4,
        asr_clients=2,
        duration_s=10.0,
        tts_max_queue=4,  # half the TTS clients: the rest are refused with a retry hint at once
        tts_max_batch=2,
        asr_sentences=2,
        drain_s=120.0,
    )
    result = await run_load(tmp_path / "load", plan, progress)
    table = report(result)

    assert result.unexpected_errors == 0, table
    assert result.cancelled_at_drain == 0, table
    # Every kind of client got answers: streams read to their summaries, profile calls with the right answers.
    assert result.tts.ok > 0 and result.tts.ttfa_s, table
    assert len(result.profiles.served_clients) == plan.profile_clients, table
    assert len(result.asr.served_clients) == plan.asr_clients and result.asr.audio_s > 0, table
    # More TTS streams than the queue: refused with RetryInfo, and the clients waited as told before retrying.
    assert result.tts.refused[TTS_QUEUE_FULL] > 0 and result.tts.retry_wait_s > 0, table
    assert set(result.tts.refused) == {TTS_QUEUE_FULL}, table
    assert not result.profiles.refused and not result.asr.refused, table

    for name in PROCESSES:
        assert result.alive_after[name], f"{name} died under load\n{table}"
        assert result.health_after[name] == "SERVING", table
        samples = result.memory.samples[name]
        assert len(samples) >= plan.duration_s / plan.sample_every_s / 2, table
        assert result.memory.peak_mb(name) < RSS_CEILINGS_MB[name], table
    for service in MIRRORED.values():
        assert result.health_after[f"gateway/{service}"] == "SERVING", table
