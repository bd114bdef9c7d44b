"""``python -m voice_gateway``: run the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from voice_common.config import CommonSettings
from voice_common.config import load_settings as load_service_settings
from voice_common.observability import configure_logging, serve_metrics
from voice_gateway.app import GatewayApp
from voice_gateway.settings import GatewaySettings

log = logging.getLogger("voice_gateway")


async def serve(common: CommonSettings, settings: GatewaySettings) -> None:
    app = GatewayApp.build(common, settings)
    await app.start()
    log.info(
        "gateway listening",
        extra={
            "address": f"{settings.host}:{app.port}",
            "tls": settings.tls_cert_file is not None,
            "openai_http": f"http://{settings.host}:{app.http_port}/v1" if app.http_port else "off",
            "authentication": settings.authentication,
            "backends": {name: backend.target for name, backend in app.backends.items()},
        },
    )
    if settings.authentication == "off":
        log.warning(
            "authentication is off (GATEWAY_AUTHENTICATION=off): every caller acts for the default tenant with "
            "every scope"
        )
    try:
        await app.serve_until_signal()
    finally:
        await app.close()
        log.info("gateway stopped")


def load_settings() -> tuple[CommonSettings, GatewaySettings]:
    return load_service_settings(GatewaySettings, "GATEWAY_")


def main() -> None:
    common, settings = load_settings()
    configure_logging("gateway", common.log_level, common.log_format)
    serve_metrics(settings.metrics_port, settings.host)
    asyncio.run(serve(common, settings))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
