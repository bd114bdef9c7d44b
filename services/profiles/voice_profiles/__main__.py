"""``python -m voice_profiles``: run the profile service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from voice_common.config import CommonSettings
from voice_common.config import load_settings as load_service_settings
from voice_common.db import redact_url
from voice_common.observability import configure_logging, serve_metrics
from voice_common.server.bootstrap import build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.settings import ProfilesSettings

log = logging.getLogger("voice_profiles")


async def serve(common: CommonSettings, settings: ProfilesSettings) -> None:
    app = await ProfilesApp.open(common, settings)
    server = build_server(
        settings=common,
        services=app.registrations(),
        host=settings.host,
        port=settings.port,
        readiness=app.readiness,
    )
    await server.start()
    # Everything made so far lives as long as the process: keep it out of the collector's full passes, which
    # otherwise walk it again and again under load (tens of ms each, straight into p99 latency).
    gc.freeze()
    log.info(
        "profile service listening",
        extra={
            "address": f"{settings.host}:{server.port}",
            "database": redact_url(app.database_url),
            "object_store": common.s3_endpoint or str(common.objects_dir.resolve()),
        },
    )
    app.start_background(settings)
    try:
        await server.serve_until_signal()
    finally:
        await app.close()  # stops the background tasks first
        log.info("profile service stopped")


def load_settings() -> tuple[CommonSettings, ProfilesSettings]:
    return load_service_settings(ProfilesSettings, "PROFILES_")


def main() -> None:
    common, settings = load_settings()
    configure_logging("profiles", common.log_level, common.log_format)
    serve_metrics(settings.metrics_port, settings.host)
    asyncio.run(serve(common, settings))
    # Stopped and cleaned up: a late signal must not turn a clean exit into "killed".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
