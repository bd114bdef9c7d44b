"""Helpers of the end-to-end tests: the real service processes, started the way an operator starts them."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voice_common.api_keys import SCOPES, well_formed
from voice_common.internal_channel import INTERNAL_TOKEN_KEY

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Settings of the developer's shell must not leak into the processes under test.
_OWN_PREFIXES = ("VOICE_", "PROFILES_", "TTS_", "ASR_", "GATEWAY_", "AWS_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a service process: embedded mode under data_dir, free ports (every service's and the
    gateway's, so no test binds a default port such as 50051), each service pointed at the others' ports, JSON
    logs."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_OWN_PREFIXES)
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        {
            "VOICE_DATA_DIR": str(data_dir),
            "PROFILES_PORT": str(free_port()),
            "PROFILES_METRICS_PORT": str(free_port()),
            "TTS_PORT": str(free_port()),
            "TTS_METRICS_PORT": str(free_port()),
            "ASR_PORT": str(free_port()),
            "ASR_METRICS_PORT": str(free_port()),
            "GATEWAY_PORT": str(free_port()),
            "GATEWAY_METRICS_PORT": str(free_port()),
            "GATEWAY_HTTP_PORT": str(free_port()),
            "VOICE_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            "NO_PROXY": "*",
            "no_proxy": "*",
            # A service whose model is a hub id would download it at start: no test reaches a real hub (a test
            # of downloads serves one on loopback and lifts this).
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra)
    # Where each service finds the others follows their ports, unless the test names an address itself.
    profiles = f"127.0.0.1:{env['PROFILES_PORT']}"
    addresses = {
        "TTS_PROFILES_ADDRESS": profiles,
        "ASR_PROFILES_ADDRESS": profiles,
        "PROFILES_ASR_ADDRESS": f"127.0.0.1:{env['ASR_PORT']}",
        "GATEWAY_PROFILES_TARGET": profiles,
        "GATEWAY_TTS_TARGET": f"127.0.0.1:{env['TTS_PORT']}",
        "GATEWAY_ASR_TARGET": f"127.0.0.1:{env['ASR_PORT']}",
    }
    for name, address in addresses.items():
        env.setdefault(name, address)
    return env


class Process:
    """A child process whose stdout and stderr go to files (a pipe nobody drains would stall it)."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log_dir: Path, name: str, **popen: Any
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{name}-{time.monotonic_ns()}"
        self.stdout_path = log_dir / f"{stamp}.out"
        self.stderr_path = log_dir / f"{stamp}.err"
        self._stdout: IO[bytes] = open(self.stdout_path, "wb")  # noqa: SIM115 - closed by close()
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115 - closed by close()
        self.env = dict(env)
        self.popen = subprocess.Popen(
            args, env=self.env, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr, **popen
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        state = "running" if self.popen.poll() is None else f"exited with {self.popen.returncode}"
        return f"process {self.popen.args!r} {state}; stderr:\n{self.stderr()[-6000:]}"

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s: {self.describe()}") from None

    def close(self) -> None:
        """Kill if still running (a failed test), then release the log files."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        for handle in (self._stdout, self._stderr):
            with contextlib.suppress(OSError):
                handle.close()


class ServiceProcess(Process):
    """``python -m voice_profiles`` (or the launcher, or another service) with a channel to its gRPC port.

    ``prefix`` names the settings that hold the ports: ``PROFILES`` (``PROFILES_PORT``, ``PROFILES_METRICS_PORT``),
    ``TTS``, ...
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        module: str = "voice_profiles",
        prefix: str = "PROFILES",
        **popen: Any,
    ) -> None:
        super().__init__([sys.executable, "-m", module], env, log_dir, module, **popen)
        self.port = int(self.env[f"{prefix}_PORT"])
        self.metrics_port = int(self.env[f"{prefix}_METRICS_PORT"])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def health_status(self, service: str = "") -> int | None:
        """The health status, or None while nothing answers on the port."""
        try:
            response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return None
        return int(response.status)

    def wait_for(self, status: int, timeout: float = 30.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        seen: int | None = None
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"the service exited while waiting for health {status}: {self.describe()}"
                )
            seen = self.health_status(service)
            if seen == status:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"health of {service!r} is {seen}, not {status}, after {timeout} s: {self.describe()}"
        )

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def json_logs(self) -> list[dict[str, Any]]:
        """The JSON log records on stderr; a line that is not JSON fails the test."""
        records = []
        for line in self.stderr().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a log line on stderr is not JSON: {line!r}") from None
        return records

    def close(self) -> None:
        self.channel.close()
        super().close()


@contextlib.contextmanager
def service(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    module: str = "voice_profiles",
    prefix: str = "PROFILES",
    **popen: Any,
) -> Iterator[ServiceProcess]:
    process = ServiceProcess(env, log_dir, module, prefix, **popen)
    try:
        yield process
    finally:
        process.close()


def stop(process: Process, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    process.signal(signum)
    return process.wait(timeout)


def admin(env: Mapping[str, str], *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``voice-admin <args>`` as a subprocess (the console script when installed, else the module)."""
    script = Path(sys.executable).with_name("voice-admin")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_profiles.admin"]
    return subprocess.run(
        [*command, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{result.args!r} exited with {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def with_internal_token(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with a fresh internal credential, as ``make run`` gives its services: they then accept calls only
    from each other and the gateway."""
    return {**env, "VOICE_INTERNAL_TOKEN": secrets.token_urlsafe(32)}


def internal_metadata(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made as one of the platform's services (straight to a service, past the gateway)."""
    return ((INTERNAL_TOKEN_KEY, env["VOICE_INTERNAL_TOKEN"]),)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def create_key(env: Mapping[str, str], tenant: str, *scopes: str, ttl_days: float | None = None) -> str:
    """A new API key from ``voice-admin keys create`` (the secret it prints on stdout)."""
    args = ["keys", "create", "--tenant", tenant, "--name", f"e2e {tenant}"]
    for scope in scopes or SCOPES:
        args += ["--scope", scope]
    if ttl_days is not None:
        args += ["--ttl-days", str(ttl_days)]
    result = admin(env, *args)
    assert result.returncode == 0, explain(result)
    key = result.stdout.strip()
    assert well_formed(key), explain(result)
    return key


def start_gateway(env: Mapping[str, str], log_dir: Path) -> ServiceProcess:
    """``python -m voice_gateway`` (close it, or use it as ``with contextlib.closing(...)``), once it serves."""
    gateway = ServiceProcess(env, log_dir, module="voice_gateway", prefix="GATEWAY")
    try:
        gateway.wait_for(SERVING, timeout=60)
    except BaseException:
        gateway.close()
        raise
    return gateway
