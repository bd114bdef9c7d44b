"""A service's app served for a test: a real grpc.aio server on port 0 built by ``build_server``, a channel to it,
and waiting for its health status (readiness re-checked every 0.1 s, so health changes show at once)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voice_common.config import CommonSettings
from voice_common.server.bootstrap import ServiceRegistration, VoiceServer, build_server


@dataclass
class Served:
    server: VoiceServer
    channel: aio.Channel
    service_name: str
    health: Any  # health_pb2_grpc.HealthStub (untyped generated code)

    async def health_status(self, service: str) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=service))
        status: int = response.status
        return status

    async def wait_for_health(self, status: int, within_seconds: float = 10.0) -> None:
        """Both health names (the service's and "") at ``status``, within ``within_seconds``."""
        deadline = time.monotonic() + within_seconds
        seen: list[int] = []
        while time.monotonic() < deadline:
            seen = [await self.health_status(name) for name in (self.service_name, "")]
            if seen == [status, status]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"health {seen}, not {status}; last reason: {self.server.last_readiness_error}")


@contextlib.asynccontextmanager
async def served(
    common: CommonSettings,
    registration: ServiceRegistration,
    readiness: Callable[[], Awaitable[None]],
) -> AsyncIterator[Served]:
    server = build_server(
        settings=common,
        services=[registration],
        host="127.0.0.1",
        port=0,
        readiness=readiness,
        readiness_recheck_seconds=0.1,
    )
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(server, channel, registration.full_name, health_pb2_grpc.HealthStub(channel))
    finally:
        await channel.close(None)
        await server.stop(0)
