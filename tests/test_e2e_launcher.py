"""End to end: ``make run``'s launcher keeps the platform up when one service dies, and stops it only on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import grpc
import pytest
from e2e_support import SERVING, ServiceProcess, admin, explain, free_port, service, service_env, stop
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.slow
# Importing torch, qwen_tts and CTranslate2 takes a while on a small machine.
START_SECONDS = 90.0


def pids(launcher: ServiceProcess, name: str) -> list[int]:
    """The pids the launcher reported for ``name``, in start order."""
    pattern = rf"\[launcher\] (?:started|restarted \(restart \d+\)) {name} \(pid (\d+)\)"
    return [int(pid) for pid in re.findall(pattern, launcher.stderr())]


def wait_for_pid(launcher: ServiceProcess, name: str, count: int) -> int:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert launcher.popen.poll() is None, launcher.describe()
        found = pids(launcher, name)
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.1)
    raise AssertionError(f"{name} was not started {count} time(s): {launcher.describe()}")


def health(port: int, service_name: str = "") -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service_name), timeout=1
            )
        except grpc.RpcError:
            return None
    return int(response.status)


def wait_answering(launcher: ServiceProcess, port: int) -> None:
    """Until the service on ``port`` answers health checks (serving or not: TTS has no model here)."""
    deadline = time.monotonic() + START_SECONDS
    while health(port) is None:
        assert time.monotonic() < deadline, f"nothing answers on {port}: {launcher.describe()}"
        assert launcher.popen.poll() is None, launcher.describe()
        time.sleep(0.2)


def test_the_launcher_restarts_a_service_that_dies_and_keeps_the_others(tmp_path: Path) -> None:
    tts_port, asr_port = free_port(), free_port()
    env = service_env(
        tmp_path / "data",
        TTS_MODEL=str(tmp_path / "no-model"),  # TTS runs NOT_SERVING: enough to see it die and come back
        TTS_PORT=str(tts_port),
        TTS_METRICS_PORT=str(free_port()),
        ASR_PORT=str(asr_port),
        ASR_METRICS_PORT=str(free_port()),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        OMP_NUM_THREADS="1",
    )
    with service(env, tmp_path / "logs", module="voice_common.launcher") as launcher:
        launcher.wait_for(SERVING, timeout=START_SECONDS)  # the profile service
        profiles_pid = wait_for_pid(launcher, "profiles", 1)
        first_tts = wait_for_pid(launcher, "tts", 1)
        wait_answering(launcher, tts_port)

        os.kill(first_tts, signal.SIGKILL)
        second_tts = wait_for_pid(launcher, "tts", 2)
        assert second_tts != first_tts
        assert re.search(
            r"\[launcher\] tts was killed by SIGKILL after [\d.]+ s; restarting it in 1 s", launcher.stderr()
        )
        wait_answering(launcher, tts_port)
        # The others kept serving all along, in the same processes.
        assert launcher.health_status() == SERVING and pids(launcher, "profiles") == [profiles_pid]
        assert len(pids(launcher, "asr")) == 1 and len(pids(launcher, "gateway")) == 1
        # The public entry, on the test's own port (never 50051).
        assert health(int(env["GATEWAY_PORT"])) == SERVING

        os.kill(profiles_pid, signal.SIGTERM)  # an operator stopping one service: it drains, then comes back
        new_profiles = wait_for_pid(launcher, "profiles", 2)
        assert new_profiles != profiles_pid
        launcher.wait_for(SERVING, timeout=START_SECONDS)
        assert "[launcher] profiles exited with code 0" in launcher.stderr()

        assert stop(launcher, signal.SIGINT, timeout=60) == 0, launcher.describe()
        assert "[launcher] all services stopped" in launcher.stderr()
        assert launcher.health_status() is None and health(tts_port) is None and health(asr_port) is None
    doctor = admin(env, "doctor")
    assert doctor.returncode == 0, explain(doctor)
