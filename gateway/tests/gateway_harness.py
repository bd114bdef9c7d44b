"""A real profile service and a real gateway in front of it, both on port 0 in this process, with the internal
credential between them, and ways to make keys (through the profile service's own domain objects)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from grpc import aio
from pydantic import SecretStr

from voice_common.api_keys import SCOPES
from voice_common.config import CommonSettings
from voice_common.internal_channel import internal_channel
from voice_common.server.bootstrap import VoiceServer, build_server
from voice_gateway.app import GatewayApp
from voice_gateway.settings import GatewaySettings
from voice_profiles.app import ProfilesApp
from voice_profiles.domain.api_keys import RateLimits
from voice_profiles.settings import ProfilesSettings

INTERNAL_TOKEN = "internal-token-for-tests"


def trailers(error: aio.AioRpcError) -> dict[str, Any]:
    received: Any = error.trailing_metadata() or ()
    return dict(received)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class Stack:
    profiles: ProfilesApp
    profile_server: VoiceServer
    gateway: GatewayApp
    channel: aio.Channel  # a client's channel to the gateway
    direct: aio.Channel  # a channel straight to the profile service, with the internal credential
    common: CommonSettings
    keys: dict[str, str] = field(default_factory=dict)

    async def key(
        self,
        tenant: str,
        scopes: tuple[str, ...] = SCOPES,
        limits: RateLimits | None = None,
        ttl: timedelta | None = None,
        name: str = "test",
    ) -> str:
        created = await self.profiles.api_keys.create(tenant, name, scopes, limits or RateLimits(), ttl)
        return created.secret

    async def close(self) -> None:
        await self.channel.close(None)
        await self.direct.close(None)
        await self.gateway.stop(0)
        await self.profile_server.stop(0)
        await self.profiles.close()


class BackendRecorder(aio.ServerInterceptor):
    """On the profile service: what each call that reached it carried (metadata, deadline) and when it ended."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        recorded = RecordedCall(
            handler_call_details.method, dict(handler_call_details.invocation_metadata or ())
        )
        self.calls.append(recorded)
        if handler.unary_stream:
            inner_stream = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                recorded.time_remaining = context.time_remaining()
                try:
                    async for response in inner_stream(request, context):
                        yield response
                    recorded.completed = True
                finally:
                    recorded.ended.set()

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary:
            inner_unary = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                recorded.time_remaining = context.time_remaining()
                try:
                    return await inner_unary(request, context)
                finally:
                    recorded.ended.set()

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def last(self, method_name: str) -> RecordedCall:
        return next(call for call in reversed(self.calls) if call.method.endswith("/" + method_name))


@dataclass
class RecordedCall:
    method: str
    metadata: dict[str, Any]
    time_remaining: float | None = None
    completed: bool = False  # a response stream that ran to its end
    ended: asyncio.Event = field(default_factory=asyncio.Event)


async def start_stack(
    common: CommonSettings,
    gateway_settings: dict[str, Any] | None = None,
    tts_target: str = "",
    asr_target: str = "",
    recorder: BackendRecorder | None = None,
    service_common: CommonSettings | None = None,
) -> Stack:
    """``common``: the gateway's shared settings (and the profile service's, unless ``service_common`` is given:
    with mutual TLS the service holds a server certificate, the gateway a client one)."""
    # As in a cluster: the services want a tenant on every call (the gateway always sends the key's).
    common = common.model_copy(update={"internal_token": SecretStr(INTERNAL_TOKEN), "require_tenant": True})
    service_common = (service_common or common).model_copy(
        update={"internal_token": SecretStr(INTERNAL_TOKEN), "require_tenant": True}
    )
    profiles = await ProfilesApp.open(service_common, ProfilesSettings(port=0, metrics_port=0), migrate=True)
    profile_server = build_server(
        settings=service_common,
        services=profiles.registrations(),
        host="127.0.0.1",
        port=0,
        readiness=profiles.readiness,
        extra_interceptors=[recorder] if recorder is not None else [],
    )
    await profile_server.start()
    settings = GatewaySettings(
        port=0,
        metrics_port=0,
        profiles_target=f"dns:///127.0.0.1:{profile_server.port}",
        # Nothing listens on port 1: a backend that is down.
        tts_target=tts_target or "dns:///127.0.0.1:1",
        asr_target=asr_target or "dns:///127.0.0.1:1",
        # The OpenAI-compatible HTTP face only where a test asks for it (test_openai_http_server.py).
        **{"http_port": 0, **(gateway_settings or {})},
    )
    gateway = GatewayApp.build(common, settings)
    await gateway.start()
    for _ in range(200):
        if profile_server.serving:
            break
        await asyncio.sleep(0.05)
    channel = aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    direct = internal_channel(f"127.0.0.1:{profile_server.port}", common)
    return Stack(profiles, profile_server, gateway, channel, direct, common)
