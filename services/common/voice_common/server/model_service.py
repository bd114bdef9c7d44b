"""The process of a service that holds a model (``python -m voice_tts``, ``python -m voice_asr``): settings, logs,
metrics, the server, a preload and the idle unloader, until SIGTERM/SIGINT.

The app (and with it torch or CTranslate2) is imported only inside :func:`serve`, after :func:`run` has installed
its signal handlers: importing an engine takes seconds, and a SIGTERM or Ctrl-C meanwhile (the launcher stopping
the platform) must end the process cleanly, not kill it. Once serving, ``serve_until_signal``'s handlers take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from pydantic_settings import BaseSettings

from voice_common.config import CommonSettings, load_settings
from voice_common.observability import configure_logging, serve_metrics
from voice_common.server.bootstrap import ServiceRegistration

IDLE_CHECK_SECONDS = 5.0


class ModelServiceSettings(Protocol):
    host: str
    port: int
    metrics_port: int
    model: str
    idle_unload_seconds: float
    profiles_address: str


class ModelServiceApp(Protocol):
    @property
    def models(self) -> Any: ...  # a voice_common.model_manager.ModelManager

    def registration(self) -> ServiceRegistration: ...

    async def readiness(self) -> None: ...

    async def preload(self) -> None: ...

    async def close(self) -> None: ...


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


@dataclass(frozen=True)
class ModelService(Generic[SettingsT]):
    label: str  # "TTS", "ASR": in log lines
    logger: str  # the package's logger name
    settings_class: type[SettingsT]
    env_prefix: str  # "TTS_"
    # Opens the app; imports the heavy engine, so it is called only once the signal handlers are in place.
    open_app: Callable[[CommonSettings, SettingsT], Awaitable[ModelServiceApp]]


async def serve(
    service: ModelService[SettingsT],
    common: CommonSettings,
    settings: SettingsT,
    early_stops: list[int] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; ``early_stops`` collects signals that came while the engine was importing."""
    from voice_common.server.bootstrap import build_server

    log = logging.getLogger(service.logger)
    early_stops = early_stops if early_stops is not None else []
    app = await service.open_app(common, settings)
    if early_stops:
        await app.close()
        log.info("stopped before the service started")
        return
    values: ModelServiceSettings = settings  # type: ignore[assignment]
    server = build_server(
        settings=common,
        services=[app.registration()],
        host=values.host,
        port=values.port,
        readiness=app.readiness,
    )
    await server.start()
    log.info(
        f"{service.label} service listening",
        extra={
            "address": f"{values.host}:{server.port}",
            "model": values.model,
            "profiles": values.profiles_address,
        },
    )
    tasks: list[asyncio.Task[None]] = []
    if values.idle_unload_seconds > 0:
        interval = min(IDLE_CHECK_SECONDS, values.idle_unload_seconds)
        tasks.append(asyncio.create_task(app.models.run_idle_unloader(interval), name="idle-unloader"))
    # TTS_PRELOAD/ASR_PRELOAD, or a model that must be downloaded first (ModelManager.plan_preload).
    if app.models.preload_expected:
        tasks.append(asyncio.create_task(app.preload(), name="preload"))
    try:
        if early_stops:
            await server.stop()
        else:
            await server.serve_until_signal()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await app.close()
        log.info(f"{service.label} service stopped")


def run(service: ModelService[SettingsT]) -> None:
    """The process's main(): signal handlers first, then settings, logs, metrics, and :func:`serve`."""
    early_stops: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        early_stops.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, remember)
    common, settings = load_settings(service.settings_class, service.env_prefix)
    configure_logging(service.label.lower(), common.log_level, common.log_format)
    values: ModelServiceSettings = settings  # type: ignore[assignment]
    serve_metrics(values.metrics_port, values.host)
    asyncio.run(serve(service, common, settings, early_stops))
    # Stopped and cleaned up: a late signal must not turn a clean exit into "killed".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
