"""uvicorn's server for the OpenAI-compatible app, run as a task on the gateway's event loop.

The gateway process owns the signals (voice_gateway.app's ``serve_until_signal``): uvicorn's own handlers are kept
out, and ``stop`` drains it beside the gRPC server — the listener closes, running requests (a speech stream) get
the grace period to finish, then are cancelled. The socket is bound here, before uvicorn starts, so that a port in
use fails the gateway's start with a clear error and port 0 picks a free one (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("voice_gateway.openai_http")


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The gateway's loop handles SIGTERM/SIGINT and drains both servers; uvicorn's handlers would replace its.
        yield


class OpenAIHttpServer:
    def __init__(self, app: ASGIApp, host: str, port: int, grace_seconds: float) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as error:
            self._socket.close()
            raise OSError(
                f"could not listen on {host}:{port} for HTTP (is the port in use?): {error}"
            ) from None
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,  # the gateway's JSON logging stays as configured
            lifespan="off",
            timeout_graceful_shutdown=max(1, round(grace_seconds)),
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="openai-http")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # a failed start raises here
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Close the listener, let running requests finish within the grace period, then cancel them."""
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._task
