"""``GatewayApp.build()``: the gateway's parts wired together — a channel per backend, the key authenticator, the
limiter, the forwarding handler, the health mirror — and the grpc.aio server that holds them; beside it, on the same
event loop, the OpenAI-compatible HTTP face (voice_gateway.openai_http), which calls this server back."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpc import aio, ssl_server_credentials
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voice_client import AsyncVoiceClient, RetryPolicy
from voice_common.config import CommonSettings
from voice_common.internal_channel import internal_channel, internal_metadata
from voice_common.server.bootstrap import VoiceServer, connection_age_options
from voice_common.server.interceptor import StreamCutoff
from voice_gateway.authentication import AuthenticationOff, Authenticator, KeyAuthenticator
from voice_gateway.forwarding import Backend, Forwarder
from voice_gateway.health_mirror import HealthMirror
from voice_gateway.interceptor import GatewayInterceptor
from voice_gateway.metrics import TenantLabels
from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.http_app import build_app
from voice_gateway.openai_http.http_server import OpenAIHttpServer
from voice_gateway.rate_limits import KeyLimiter
from voice_gateway.routes import ASR, PROFILES, TTS, public_routes, public_services
from voice_gateway.settings import GatewaySettings

log = logging.getLogger("voice_gateway")
# gRPC's own client-side balancing: every address the backend's name resolves to (a headless Service's pods) gets
# calls in turn; kube-proxy would balance connections, and one connection carries all of a gateway's calls.
# Services keep gRPC's default ping policy (at most one ping per 5 minutes on an idle connection), so the gateway's
# pings to them stay within it.
_BACKEND_KEEPALIVE_MS = 300_000


def backend_channel_options(common: CommonSettings, settings: GatewaySettings) -> list[tuple[str, Any]]:
    limit = common.grpc_max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", _BACKEND_KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.enable_retries", 0),
        # The gateway's receive window per backend stream stays at HTTP/2's 64 KiB instead of growing by BDP
        # probing to megabytes: what a slow client has not read yet waits in the backend, not in the gateway's
        # memory (32 slow readers would otherwise hold tens of MB here). On a cluster's network 64 KiB per
        # round trip is still tens of MB/s per stream.
        ("grpc.http2.bdp_probe", 0),
    ]


def server_options(common: CommonSettings, settings: GatewaySettings) -> list[tuple[str, Any]]:
    limit = common.grpc_max_message_bytes
    keepalive_ms = int(settings.keepalive_seconds * 1000)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        # Clients may ping as often as the gateway does without being told off (GOAWAY too_many_pings).
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", keepalive_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        *connection_age_options(common),
    ]


@dataclass
class GatewayApp:
    server: VoiceServer
    backends: dict[str, Backend]
    mirror: HealthMirror
    http: OpenAIHttpServer | None = None
    http_client: AsyncVoiceClient | None = None

    @classmethod
    def build(
        cls,
        common: CommonSettings,
        settings: GatewaySettings,
        extra_interceptors: Sequence[aio.ServerInterceptor] = (),
    ) -> GatewayApp:
        options = backend_channel_options(common, settings)
        targets = {PROFILES: settings.profiles_target, TTS: settings.tts_target, ASR: settings.asr_target}
        backends = {
            # The token goes into each forwarded call's metadata (Forwarder, KeyAuthenticator), not through channel
            # interceptors, which cost an extra task per call and per streamed message.
            name: Backend(name, target, internal_channel(target, common, options=options, add_token=False))
            for name, target in targets.items()
        }
        credential = internal_metadata(common)
        defaults = settings.default_limits
        authenticator: Authenticator = (
            KeyAuthenticator(backends[PROFILES].channel, defaults, settings.key_cache_seconds, credential)
            if settings.authentication == "keys"
            else AuthenticationOff(common.default_tenant, defaults)
        )
        routes = public_routes()
        cutoff = StreamCutoff()
        server = aio.server(
            interceptors=[
                GatewayInterceptor(
                    authenticator, routes, KeyLimiter(), TenantLabels(settings.metric_tenants)
                ),
                *extra_interceptors,
            ],
            options=server_options(common, settings),
        )
        server.add_generic_rpc_handlers((Forwarder(routes, backends, cutoff, credential),))
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services = public_services()
        reflection.enable_server_reflection([*services, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{settings.host}:{settings.port}"
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            credentials = ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not listen on {address} (is the port in use?)")
        http, http_client = None, None
        if settings.http_port:
            # The HTTP face is a gRPC client of this server, with each caller's key: the same keys, scopes and
            # limits. It calls a plaintext port of its own on loopback, because the public port may speak TLS with
            # a certificate that names no loopback address. No retries: a 429 or 503 goes back to the HTTP caller.
            loopback = server.add_insecure_port("127.0.0.1:0")
            if loopback == 0:
                raise OSError("could not listen on a loopback port for the HTTP face")
            http_client = AsyncVoiceClient(f"127.0.0.1:{loopback}", retry=RetryPolicy.none())
            context = OpenAIContext(
                http_client,
                max_upload_bytes=settings.http_max_upload_bytes,
                max_message_bytes=common.grpc_max_message_bytes,
            )
            http = OpenAIHttpServer(
                build_app(context), settings.host, settings.http_port, common.shutdown_grace_seconds
            )
        mirror = HealthMirror(
            health_servicer, [(name, backends[backend].channel) for name, backend in services.items()]
        )
        voice_server = VoiceServer(
            server,
            health_servicer,
            [],  # the overall status only: each public service's mirrors its backend (HealthMirror)
            None,
            port,
            common.shutdown_grace_seconds,
            5.0,
            cutoff,
        )
        if common.health_port:
            voice_server.open_health_port(settings.host, common.health_port)
        return cls(voice_server, backends, mirror, http, http_client)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http is not None else None

    async def start(self) -> None:
        await self.mirror.start()
        await self.server.start()
        if self.http is not None:
            await self.http.start()

    async def drain(self, grace: float | None = None) -> None:
        """Both faces at once: NOT_SERVING and no new calls or connections; running ones get the grace period."""
        if self.http is not None:
            await asyncio.gather(self.server.stop(grace), self.http.stop())
        else:
            await self.server.stop(grace)

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then drain (voice_common's VoiceServer.serve_until_signal, with the HTTP
        face drained beside the gRPC server)."""
        if self.http is None:
            await self.server.serve_until_signal()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("draining")
        await self.drain()
        # A second signal while the clean-up runs must not kill it (see VoiceServer.serve_until_signal).
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _ignore)

    async def stop(self, grace: float | None = None) -> None:
        await self.drain(grace)
        await self.close()

    async def close(self) -> None:
        await self.mirror.close()
        if self.http_client is not None:
            await self.http_client.close()
        for backend in self.backends.values():
            await backend.channel.close(None)


def _ignore() -> None:
    """A signal that arrives once the gateway is already stopping."""
