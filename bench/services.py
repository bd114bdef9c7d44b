"""The servers under test, each in its own process: the echo baseline, the profile service and the TTS service as
in production.

The profile service is started exactly as deployed, ``python -m voice_profiles`` configured through the
environment, in one of two configurations:

* ``filesystem``: the embedded default, SQLite and objects under ``VOICE_DATA_DIR``;
* ``postgres_s3``: PostgreSQL (a fresh database on :func:`voice_testing.postgres.postgres_server`) and S3
  (a moto server subprocess, :class:`voice_testing.s3_server.MotoServer`), migrated at start.

The TTS service is ``python -m voice_tts`` beside a profile service (:func:`tts_service`), embedded store, on the
CPU, with the model loaded at start (``TTS_PRELOAD``), so it answers SERVING only once the model is in memory.

The ASR service is ``python -m voice_asr`` on its own (:func:`asr_service`): CPU, int8, the model loaded at start
(``ASR_PRELOAD``); inline audio needs no profile service, so none is started beside it.

The gateway is ``python -m voice_gateway`` (:func:`gateway_service`) in front of services started here with an
internal token, API keys on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from bench.common import (
    READY_TIMEOUT_S,
    BenchError,
    ManagedProcess,
    child_environment,
    free_port,
    managed_process,
    python_module_argv,
)
from bench.echo_server import ECHO_METHOD
from voice_common.config import CommonSettings
from voice_common.object_store import FilesystemObjectStore, ObjectStore, S3ObjectStore
from voice_testing.postgres import fresh_database, postgres_server
from voice_testing.s3_server import MotoServer, unique_bucket_name

FILESYSTEM = "filesystem"
POSTGRES_S3 = "postgres_s3"
CONFIGS = (FILESYSTEM, POSTGRES_S3)
CONFIG_TITLES = {
    FILESYSTEM: "SQLite + filesystem (embedded default)",
    POSTGRES_S3: "PostgreSQL + S3 (moto)",
}
TENANT_KEY = "x-voice-tenant"
HOST = "127.0.0.1"


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_KEY, tenant),)


@dataclass(frozen=True)
class EchoServer:
    address: str
    process: ManagedProcess


@dataclass(frozen=True)
class S3Location:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str


@dataclass(frozen=True)
class ProfileService:
    config: str
    address: str
    data_dir: Path
    process: ManagedProcess
    s3: S3Location | None
    database_url: str | None

    @property
    def title(self) -> str:
        return CONFIG_TITLES[self.config]

    def open_store(self) -> ObjectStore:
        """A store on the same objects the service writes (same directory, or same S3 bucket)."""
        if self.s3 is not None:
            return S3ObjectStore(self.s3.endpoint, self.s3.access_key, self.s3.secret_key, self.s3.bucket)
        return FilesystemObjectStore(self.data_dir / "objects")

    def common_settings(self) -> CommonSettings:
        """The service's VOICE_ settings, for running its domain code in this process on the same data."""
        if self.s3 is None:
            return CommonSettings(data_dir=self.data_dir, database_url=self.database_url)
        return CommonSettings(
            data_dir=self.data_dir,
            database_url=self.database_url,
            s3_endpoint=self.s3.endpoint,
            s3_access_key=SecretStr(self.s3.access_key),
            s3_secret_key=SecretStr(self.s3.secret_key),
            s3_bucket=self.s3.bucket,
        )


class _Probe:
    """A readiness probe: returns None when ready, else why not."""

    async def __call__(self, channel: aio.Channel) -> str | None:
        raise NotImplementedError


class _EchoProbe(_Probe):
    async def __call__(self, channel: aio.Channel) -> str | None:
        answer = await channel.unary_unary(ECHO_METHOD, None, None)(b"ping", timeout=1)
        return None if answer == b"ping" else f"echo answered {answer!r}"


class _HealthProbe(_Probe):
    async def __call__(self, channel: aio.Channel) -> str | None:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        if response.status == health_pb2.HealthCheckResponse.SERVING:
            return None
        return f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}"


async def _wait_until(
    process: ManagedProcess,
    what: str,
    channel: aio.Channel,
    check: _Probe,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        process.check_alive(f"starting ({what})")
        try:
            answer = await check(channel)
            if answer is None:
                return
            last_error = answer
        except aio.AioRpcError as error:
            last_error = f"{error.code().name}: {error.details()}"
        await asyncio.sleep(0.1)
    raise BenchError(
        f"{process.name} (pid {process.pid}) did not become ready within {timeout_s:.0f} s "
        f"({what}; last answer: {last_error}); its output:\n{process.output()}"
    )


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[EchoServer]:
    port = free_port(HOST)
    argv = python_module_argv("bench.echo_server", "--host", HOST, "--port", str(port))
    with managed_process("echo server", argv, child_environment({})) as process:
        address = f"{HOST}:{port}"
        async with aio.insecure_channel(address) as channel:
            await _wait_until(process, "an Echo call answers", channel, _EchoProbe())
        yield EchoServer(address, process)


@contextlib.asynccontextmanager
async def profile_service(
    config: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ProfileService]:
    """Start ``python -m voice_profiles`` in ``config`` and wait for grpc.health.v1 SERVING (30 s at most)."""
    if config not in CONFIGS:
        raise ValueError(f"unknown configuration {config!r}")
    data_dir = workdir / (config + ("-" + "-".join(sorted(extra_env)) if extra_env else "")).lower()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    env = {
        "VOICE_DATA_DIR": str(data_dir),
        "VOICE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "VOICE_LOG_FORMAT": "text",
        "VOICE_SHUTDOWN_GRACE_SECONDS": "2",
        "PROFILES_HOST": HOST,
        "PROFILES_PORT": str(port),
        "PROFILES_METRICS_PORT": "0",
        **(extra_env or {}),
    }
    with contextlib.ExitStack() as stack:
        s3: S3Location | None = None
        database_url: str | None = None
        if config == POSTGRES_S3:
            admin_url = stack.enter_context(postgres_server())
            database_url = stack.enter_context(fresh_database(admin_url))
            moto = stack.enter_context(MotoServer())
            s3 = S3Location(moto.endpoint, moto.access_key, moto.secret_key, unique_bucket_name("bench"))
            env.update(
                {
                    "VOICE_DATABASE_URL": database_url,
                    "VOICE_S3_ENDPOINT": s3.endpoint,
                    "VOICE_S3_ACCESS_KEY": s3.access_key,
                    "VOICE_S3_SECRET_KEY": s3.secret_key,
                    "VOICE_S3_BUCKET": s3.bucket,
                    "PROFILES_MIGRATE_ON_START": "true",
                }
            )
        process = stack.enter_context(
            managed_process(
                f"profile service ({config})", python_module_argv("voice_profiles"), child_environment(env)
            )
        )
        address = f"{HOST}:{port}"
        async with aio.insecure_channel(address) as channel:
            await _wait_until(process, "grpc.health.v1 Check answers SERVING", channel, _HealthProbe())
        yield ProfileService(config, address, data_dir, process, s3, database_url)


@contextlib.asynccontextmanager
async def _model_service(
    label: str, module: str, prefix: str, data_dir: Path, settings: dict[str, str], timeout_s: float
) -> AsyncIterator[tuple[str, ManagedProcess]]:
    """Start ``python -m <module>`` (a service that preloads its model) on a free port with ``settings`` (its
    ``<prefix>_*`` variables), quiet logs and no metrics port; wait until it answers SERVING, which comes once the
    model is loaded. Yields its address and process. ``data_dir`` must exist."""
    port = free_port(HOST)
    env = {
        "VOICE_DATA_DIR": str(data_dir),
        "VOICE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "VOICE_LOG_FORMAT": "text",
        "VOICE_SHUTDOWN_GRACE_SECONDS": "2",
        "HF_HUB_OFFLINE": "1",
        f"{prefix}_HOST": HOST,
        f"{prefix}_PORT": str(port),
        f"{prefix}_METRICS_PORT": "0",
        f"{prefix}_PRELOAD": "true",
        **settings,
    }
    with managed_process(label, python_module_argv(module), child_environment(env)) as process:
        address = f"{HOST}:{port}"
        async with aio.insecure_channel(address) as channel:
            await _wait_until(
                process,
                "grpc.health.v1 Check answers SERVING (model loaded)",
                channel,
                _HealthProbe(),
                timeout_s,
            )
        yield address, process


@dataclass(frozen=True)
class TtsService:
    address: str
    model: str  # TTS_MODEL as given to the service (also the prompt cache's model id)
    data_dir: Path
    process: ManagedProcess


# torch and qwen_tts take seconds to import, and TTS_PRELOAD loads the model before SERVING.
TTS_READY_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def tts_service(
    profiles: ProfileService, workdir: Path, model: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[TtsService]:
    """Start ``python -m voice_tts`` on ``model`` (a directory), reading voices from ``profiles``; wait for SERVING.

    Its prompt store is its own directory under ``workdir``. Math threads: whatever ``OMP_NUM_THREADS`` this
    process has or ``extra_env`` sets (the caller keeps its in-process torch on the same count).
    """
    data_dir = workdir / "tts"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "TTS_MODEL": str(model),
        "TTS_DEVICE": "cpu",
        "TTS_DTYPE": "float32",
        "TTS_PROFILES_ADDRESS": profiles.address,
        **(extra_env or {}),
    }
    async with _model_service("TTS service", "voice_tts", "TTS", data_dir, settings, TTS_READY_TIMEOUT_S) as (
        address,
        process,
    ):
        yield TtsService(address, str(model), data_dir, process)


@dataclass(frozen=True)
class AsrService:
    address: str
    threads: int  # ASR_CPU_THREADS
    process: ManagedProcess


# CTranslate2, faster-whisper and onnxruntime take seconds to import; ASR_PRELOAD loads the model before SERVING.
ASR_READY_TIMEOUT_S = 120.0


@contextlib.asynccontextmanager
async def asr_service(
    workdir: Path, threads: int, extra_env: dict[str, str] | None = None
) -> AsyncIterator[AsrService]:
    """Start ``python -m voice_asr`` (default model, CPU, int8, ``threads`` CTranslate2 threads per transcription,
    one worker) and wait for SERVING, which comes once the model is loaded."""
    data_dir = workdir / "asr"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "ASR_DEVICE": "cpu",
        "ASR_COMPUTE_TYPE": "int8",
        "ASR_CPU_THREADS": str(threads),
        "ASR_NUM_WORKERS": "1",
        # Only stored samples are read through the profile service; the benchmarks send inline audio.
        "ASR_PROFILES_ADDRESS": f"{HOST}:{free_port(HOST)}",
        **(extra_env or {}),
    }
    async with _model_service("ASR service", "voice_asr", "ASR", data_dir, settings, ASR_READY_TIMEOUT_S) as (
        address,
        process,
    ):
        yield AsrService(address, threads, process)


def describe_rpc_error(error: grpc.RpcError) -> str:
    if isinstance(error, aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)


@dataclass(frozen=True)
class GatewayService:
    address: str
    process: ManagedProcess
    http_url: str  # the OpenAI-compatible HTTP face, http://host:port/v1


@contextlib.asynccontextmanager
async def gateway_service(
    targets: dict[str, str], internal_token: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[GatewayService]:
    """Start ``python -m voice_gateway`` with API keys on, forwarding to ``targets`` (``profiles``, ``tts``,
    ``asr``: host:port; a missing one gets a port nobody listens on) with ``internal_token``; wait for SERVING
    and for its HTTP face (on a free port, never the default 8080 a developer's ``make run`` may hold)."""
    port = free_port(HOST)
    http_port = free_port(HOST)
    env = {
        "VOICE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "VOICE_LOG_FORMAT": "text",
        "VOICE_SHUTDOWN_GRACE_SECONDS": "2",
        "VOICE_INTERNAL_TOKEN": internal_token,
        "GATEWAY_HOST": HOST,
        "GATEWAY_PORT": str(port),
        "GATEWAY_METRICS_PORT": "0",
        "GATEWAY_AUTHENTICATION": "keys",
        "GATEWAY_HTTP_PORT": str(http_port),
        **{
            f"GATEWAY_{name.upper()}_TARGET": f"dns:///{targets.get(name) or f'{HOST}:{free_port(HOST)}'}"
            for name in ("profiles", "tts", "asr")
        },
        **(extra_env or {}),
    }
    with managed_process("gateway", python_module_argv("voice_gateway"), child_environment(env)) as process:
        address = f"{HOST}:{port}"
        async with aio.insecure_channel(address) as channel:
            await _wait_until(process, "grpc.health.v1 Check answers SERVING", channel, _HealthProbe())
        http_port = int(env["GATEWAY_HTTP_PORT"])  # extra_env may have set another (0: off)
        await _wait_for_listener(process, http_port)
        yield GatewayService(address, process, f"http://{HOST}:{http_port}/v1" if http_port else "")


async def _wait_for_listener(process: ManagedProcess, port: int) -> None:
    """Until ``port`` accepts TCP connections (the gateway opens its HTTP face just after its gRPC port); 0: off."""
    if port == 0:
        return
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        process.check_alive(f"opening port {port}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{process.name} did not listen on {port} within {READY_TIMEOUT_S:.0f} s"
                ) from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
