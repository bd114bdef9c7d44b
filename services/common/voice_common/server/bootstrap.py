"""``build_server``: the one way every service builds its grpc.aio server.

It wires the interceptor (internal credential, request id, tenant, errors -> status, metrics), the TLS-only port when
the internal credential is mutual TLS, the stock grpc.health.v1 servicer (NOT_SERVING
until the service's readiness check passes, re-checked while running), reflection, message-size limits, and a
graceful drain on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voice_common.config import CommonSettings
from voice_common.server.interceptor import ServerInterceptor, StreamCutoff
from voice_common.server.status_mapping import ErrorMapper
from voice_common.tenancy import TenantResolver

log = logging.getLogger(__name__)

# VoiceServer.stop runs the grace period itself (so that it can mark the cut before it cancels the calls); grpc's own
# timer only needs to outlast it.
_GRPC_GRACE_SECONDS = 24 * 3600.0
# A not-ready reason that changes only in its numbers (a download's progress) is not news for the log.
_NUMBERS = re.compile(r"\d+(\.\d+)?")

ReadinessCheck = Callable[[], Awaitable[None]]
# The health service name a liveness probe asks for: SERVING from start until the drain, whatever the readiness
# check says. A process whose database is down is alive and must not be restarted for it (a restart cannot bring
# the database back, and a crash loop delays the recovery); one whose event loop is stuck does not answer at all.
LIVENESS_SERVICE = "liveness"


@dataclass(frozen=True)
class ServiceRegistration:
    """A servicer to add: ``add(server)`` registers it; ``full_name`` is its proto service name; ``error_mappers``
    turn the errors of its own infrastructure (a database's) into a status (status_mapping.ErrorMapper)."""

    full_name: str
    add: Callable[[aio.Server], None]
    error_mappers: Sequence[ErrorMapper] = ()


class VoiceServer:
    def __init__(
        self,
        server: aio.Server,
        health_servicer: Any,  # grpc_health.v1.health.aio.HealthServicer (untyped)
        service_names: Sequence[str],
        readiness: ReadinessCheck | None,
        port: int,
        grace_seconds: float,
        recheck_seconds: float,
        cutoff: StreamCutoff | None = None,
    ) -> None:
        self.server = server
        self._cutoff = cutoff or StreamCutoff()
        self.health = health_servicer
        self.service_names = list(service_names)
        self.port = port
        self._readiness = readiness
        self._grace = grace_seconds
        self._recheck = recheck_seconds
        self._monitor: asyncio.Task[None] | None = None
        self._serving = False
        self._stopping = False
        self.last_readiness_error: str | None = "not checked yet"
        self._logged_reason = ""
        self._health_server: aio.Server | None = None
        self.health_port = 0

    def open_health_port(self, host: str, port: int) -> int:
        """Serve this server's health (the same statuses, Check and Watch) on a plaintext port of its own as well,
        for probes that cannot present the service port's TLS or token; returns the port bound. The port is
        opened by ``start`` and closed after the drain, so probes see NOT_SERVING while calls drain."""
        health_server = aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, health_server)
        bound = health_server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"could not listen on {host}:{port} for health (is the port in use?)")
        self._health_server = health_server
        self.health_port = bound
        return bound

    @property
    def serving(self) -> bool:
        return self._serving

    async def start(self) -> None:
        await self._set_status(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self._health_server is not None:
            await self._health_server.start()
        self._monitor = asyncio.create_task(self._watch_readiness(), name="readiness")

    async def check_ready(self) -> bool:
        """Run the readiness check once and publish the result through the health service."""
        try:
            if self._readiness is not None:
                await self._readiness()
        except Exception as error:  # any failure means not ready; the reason is logged, not raised
            reason = f"{type(error).__name__}: {error}"
            # Log each new reason once: operators must see why (e.g. "run voice-admin migrate"), not every recheck.
            if self._serving or self._new_reason(reason):
                log.warning("not ready", extra={"reason": reason})
                self._logged_reason = reason
            self.last_readiness_error = reason
            await self._set_status(False)
            return False
        if not self._serving:
            log.info("ready", extra={"port": self.port})
        self.last_readiness_error = None
        await self._set_status(True)
        return True

    def _new_reason(self, reason: str) -> bool:
        """Whether ``reason`` is news for the log: one that differs from the last logged one only in its numbers
        (a download's progress: "downloading …: 35% of 2.5 GB") is not; whoever makes the progress logs it now and
        then (the model manager does), and health always carries the current reason."""
        return _NUMBERS.sub("#", reason) != _NUMBERS.sub("#", self._logged_reason)

    async def _watch_readiness(self) -> None:
        while not self._stopping:
            await self.check_ready()
            # Re-check often until ready, then at the slower pace.
            await asyncio.sleep(self._recheck if self._serving else min(self._recheck, 0.5))

    async def _set_status(self, serving: bool) -> None:
        if self._stopping:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, refuse new RPCs, let running ones finish within the grace period."""
        if self._stopping:
            return
        await self.health.enter_graceful_shutdown()
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self._drain(self._grace if grace is None else grace)
        if self._health_server is not None:
            await self._health_server.stop(None)

    async def _drain(self, grace: float) -> None:
        # Refuse new calls and wait for the running ones; at the end of the grace period, mark the request streams
        # as cut off (StreamCutoff) and only then cancel the calls, so that no handler takes a stream that the
        # cancellation ended for a complete one.
        graceful = asyncio.ensure_future(self.server.stop(_GRPC_GRACE_SECONDS))
        finished, _ = await asyncio.wait({graceful}, timeout=grace)
        if not finished:
            self._cutoff.reached = True
            await self.server.stop(None)
        await graceful

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then drain."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("draining", extra={"grace_seconds": self._grace})
        # The handlers stay installed while draining, and then do nothing: a second Ctrl-C or SIGTERM (a terminal
        # signals the whole process group, and `make run`'s launcher signals its children too) must neither kill
        # the drain nor the clean-up after it.
        await self.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _ignore)


def _ignore() -> None:
    """A signal that arrives once the service is already stopping."""


def build_server(
    *,
    settings: CommonSettings,
    services: Sequence[ServiceRegistration],
    host: str,
    port: int,
    readiness: ReadinessCheck | None = None,
    readiness_recheck_seconds: float = 5.0,
    extra_interceptors: Sequence[aio.ServerInterceptor] = (),
) -> VoiceServer:
    """Build (not start) a server; ``port`` 0 picks a free port, read back from ``VoiceServer.port``."""
    limit = settings.grpc_max_message_bytes
    cutoff = StreamCutoff()
    server = aio.server(
        interceptors=[
            ServerInterceptor(
                TenantResolver(settings.default_tenant, settings.require_tenant),
                cutoff,
                # Once each: the services of one process (the profile service's two) often share their mappers.
                list(dict.fromkeys(mapper for service in services for mapper in service.error_mappers)),
                settings.internal_token.get_secret_value(),
            ),
            *extra_interceptors,
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            *connection_age_options(settings),
        ],
    )
    for service in services:
        service.add(server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [service.full_name for service in services]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = _listen(server, f"{host}:{port}", settings)
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port} (is the port in use?)")
    voice_server = VoiceServer(
        server,
        health_servicer,
        names,
        readiness,
        bound,
        settings.shutdown_grace_seconds,
        readiness_recheck_seconds,
        cutoff,
    )
    if settings.health_port:
        voice_server.open_health_port(host, settings.health_port)
    return voice_server


def _listen(server: aio.Server, address: str, settings: CommonSettings) -> int:
    """Open the port: TLS only, with a client certificate signed by the platform's CA, when the internal credential
    is mutual TLS; plaintext otherwise. The port number bound, 0 when it could not be."""
    if settings.internal_tls:
        assert (
            settings.internal_tls_cert_file
            and settings.internal_tls_key_file
            and settings.internal_tls_ca_file
        )
        credentials = grpc.ssl_server_credentials(
            [(settings.internal_tls_key_file.read_bytes(), settings.internal_tls_cert_file.read_bytes())],
            root_certificates=settings.internal_tls_ca_file.read_bytes(),
            require_client_auth=True,
        )
        return server.add_secure_port(address, credentials)
    if not settings.internal_token.get_secret_value():
        # Once, at start: the port is fine for one machine (`make run` sets a token), never for a cluster.
        log.warning(
            "no internal credential configured (VOICE_INTERNAL_TOKEN or VOICE_INTERNAL_TLS_*): this service "
            "accepts calls, and the tenant they name in x-voice-tenant, from anyone who can reach its port",
            extra={"address": address},
        )
    return server.add_insecure_port(address)


def connection_age_options(settings: CommonSettings) -> list[tuple[str, Any]]:
    """Server options that close each client connection gracefully (GOAWAY) after
    ``VOICE_GRPC_MAX_CONNECTION_AGE_SECONDS``: the client opens a new one and resolves the name again, so replicas
    added since (a scale-up, a rollout) get their share of calls. Calls running on the old connection finish
    (no grace limit is set): a live stream is never cut by this."""
    if settings.grpc_max_connection_age_seconds <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(settings.grpc_max_connection_age_seconds * 1000))]
