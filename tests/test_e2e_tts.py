"""End to end: ``python -m voice_tts`` without a usable model, alone and under ``make run``'s launcher.

Where weights cannot be downloaded, the TTS service must still start, say NOT_SERVING with the way out (how to set
``TTS_MODEL``), and leave the rest of the platform serving.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_support import NOT_SERVING, SERVING, ServiceProcess, free_port, service, service_env, stop
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.slow
SERVICE_NAME = "voice.tts.v1.TtsService"
# Importing torch and qwen_tts takes a while on a small machine.
START_SECONDS = 90.0


def tts_env(tmp_path: Path) -> dict[str, str]:
    return service_env(
        tmp_path / "data",
        TTS_MODEL=str(tmp_path / "nonexistent"),
        TTS_PORT=str(free_port()),
        TTS_METRICS_PORT=str(free_port()),
        # An empty hub cache: whatever this machine has cached must not matter.
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )


def json_logs(process: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON log records; any other line fails the test (qwen_tts's import banners must not reach the console:
    voice_tts.qwen)."""
    lines = [line for line in process.stderr().splitlines() if line]
    assert all(line.startswith("{") for line in lines), process.stderr()
    return [json.loads(line) for line in lines]


def not_ready_reason(process: ServiceProcess) -> str:
    """The reason of the TTS service's first "not ready" log line, once it has logged one."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.popen.poll() is None, process.describe()
        for record in json_logs(process):
            if record.get("message") == "not ready":
                return str(record.get("reason", ""))
        time.sleep(0.2)
    raise AssertionError(f"no 'not ready' log line: {process.describe()}")


def assert_says_how_to_set_the_model(text: str) -> None:
    assert "nonexistent" in text and "TTS_MODEL" in text, text
    assert "make tiny-model" in text and "models/tiny-qwen3-tts" in text, text


def test_without_a_model_the_service_runs_not_serving(tmp_path: Path) -> None:
    with service(tts_env(tmp_path), tmp_path / "logs", module="voice_tts", prefix="TTS") as tts:
        assert_says_how_to_set_the_model(not_ready_reason(tts))
        warnings = [r for r in json_logs(tts) if r.get("level") == "WARNING" and "TTS model" in r["message"]]
        assert len(warnings) == 1, warnings  # said once at start, not at every readiness check
        assert_says_how_to_set_the_model(warnings[0]["reason"])
        time.sleep(1.0)  # several readiness re-checks (every 0.5 s while not serving)
        for name in ("", SERVICE_NAME):
            assert tts.health_status(name) == NOT_SERVING
        assert "voice_tts_queue_depth 0.0" in tts.metrics()
        assert stop(tts) == 0, tts.describe()


def test_make_run_serves_profiles_while_tts_has_no_model(tmp_path: Path) -> None:
    env = tts_env(tmp_path)
    with service(env, tmp_path / "logs", module="voice_common.launcher") as launcher:
        launcher.wait_for(SERVING, timeout=START_SECONDS)  # the profile service
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{env['TTS_PORT']}"))
        deadline = time.monotonic() + START_SECONDS
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1).status
            except grpc.RpcError:
                time.sleep(0.2)
        time.sleep(1.0)  # past the first readiness checks
        status = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1).status
        assert status == NOT_SERVING, launcher.describe()
        assert launcher.popen.poll() is None and launcher.health_status() == SERVING, launcher.describe()
        assert stop(launcher, signal.SIGINT, timeout=30) == 0, launcher.describe()
        assert "[launcher] all services stopped" in launcher.stderr()
