"""``python -m voice_asr``: run the ASR service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from types import FrameType

from voice_asr.settings import AsrSettings
from voice_common.config import CommonSettings
from voice_common.config import load_settings as load_service_settings
from voice_common.observability import configure_logging, serve_metrics

log = logging.getLogger("voice_asr")

IDLE_CHECK_SECONDS = 5.0


async def serve(common: CommonSettings, settings: AsrSettings, early_stops: list[int] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``early_stops`` collects signals that came while the engine was still importing."""
    early_stops = early_stops if early_stops is not None else []
    # Heavy (CTranslate2, faster-whisper, onnxruntime): imported only now, so main() has its signal handlers in place meanwhile.
    from voice_asr.app import AsrApp
    from voice_common.server.bootstrap import build_server

    if early_stops:
        log.info("stopped before the service started")
        return
    app = AsrApp.open(common, settings)
    server = build_server(
        settings=common,
        services=[app.registration()],
        host=settings.host,
        port=settings.port,
        readiness=app.readiness,
    )
    await server.start()
    log.info(
        "ASR service listening",
        extra={
            "address": f"{settings.host}:{server.port}",
            "model": settings.model,
            "profiles": settings.profiles_address,
        },
    )
    tasks: list[asyncio.Task[None]] = []
    if settings.idle_unload_seconds > 0:
        interval = min(IDLE_CHECK_SECONDS, settings.idle_unload_seconds)
        tasks.append(asyncio.create_task(app.models.run_idle_unloader(interval), name="idle-unloader"))
    if settings.preload:
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
        log.info("ASR service stopped")


def load_settings() -> tuple[CommonSettings, AsrSettings]:
    return load_service_settings(AsrSettings, "ASR_")


def main() -> None:
    # Importing the engine takes seconds: a SIGTERM or Ctrl-C meanwhile (the launcher stopping the platform) must end
    # the process cleanly, not kill it. Once serving, serve_until_signal's handlers take over.
    early_stops: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        early_stops.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, remember)
    common, settings = load_settings()
    configure_logging("asr", common.log_level, common.log_format)
    serve_metrics(settings.metrics_port, settings.host)
    asyncio.run(serve(common, settings, early_stops))
    # Stopped and cleaned up: a late signal must not turn a clean exit into "killed".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
