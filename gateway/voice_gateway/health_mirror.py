"""The gateway's health for each public service mirrors its backend's (TTS without a model → the gateway's
``voice.tts.v1.TtsService`` is NOT_SERVING too), by watching the backend's own grpc.health.v1 status.

One ``Watch`` stream per public service: the backend pushes each change, so the mirror follows at once without
polling. A broken stream (the backend went away) means NOT_SERVING until a new one answers; with several replicas
behind one target, the stream is held by one of them, and its replacement by whichever answers next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
# Failed watches in a row (about 4 s) before the log says a backend's health is unknown.
_QUIET_FAILURES = 4


class HealthMirror:
    def __init__(self, health_servicer: Any, watched: list[tuple[str, aio.Channel]]) -> None:
        """``watched``: (service name, channel to the backend that serves it)."""
        self._health = health_servicer
        self._watched = watched
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for name, channel in self._watched:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._tasks.append(asyncio.create_task(self._follow(name, channel), name=f"health {name}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _follow(self, name: str, channel: aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        failures = 0
        while True:
            try:
                async for response in stub.Watch(health_pb2.HealthCheckRequest(service=name)):
                    if failures >= _QUIET_FAILURES:
                        log.info("backend health known again", extra={"service": name})
                    failures = 0
                    await self._set(name, response.status)
            except aio.AioRpcError as error:
                # Said once an outage lasts: at `make run` the gateway starts beside its backends, which take a
                # moment to listen, and that is not news.
                if failures + 1 == _QUIET_FAILURES:
                    log.warning(
                        "backend health unknown", extra={"service": name, "reason": f"{error.code().name}"}
                    )
            await self._set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
            failures += 1

    async def _set(self, name: str, status: int) -> None:
        # SERVICE_UNKNOWN from a backend that does not serve the name (a deployment's mistake) is NOT_SERVING here.
        serving = status == health_pb2.HealthCheckResponse.SERVING
        await self._health.set(
            name,
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING,
        )
