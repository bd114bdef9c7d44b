"""How internal calls spread over replicas: ``internal_channel`` balances round robin over every address its target
resolves to (a headless Service's pods), and ``build_server`` ages connections out so that clients resolve again
and find new replicas, without cutting a call that runs on an aged connection. Real grpc.aio servers on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
from grpc import aio

from voice_common.config import CommonSettings
from voice_common.internal_channel import internal_channel
from voice_common.server.bootstrap import (
    ServiceRegistration,
    VoiceServer,
    build_server,
    connection_age_options,
)

SERVICE = "test.v1.ReplicaService"
CALL_SECONDS = 10.0


def _identity(data: bytes) -> bytes:
    return data


def _replica(name: bytes) -> ServiceRegistration:
    """A service whose ``Name`` answers which replica took the call, and whose ``Slow`` streams ``count`` messages
    ``interval`` apart (the request is ``b"count,interval"``)."""

    async def answer_name(request: bytes, context: Any) -> bytes:
        return name

    async def slow(request: bytes, context: Any) -> AsyncIterator[bytes]:
        count, interval = request.split(b",")
        for index in range(int(count)):
            await asyncio.sleep(float(interval))
            yield str(index).encode()

    codec: dict[str, Any] = {"request_deserializer": _identity, "response_serializer": _identity}
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Name": grpc.unary_unary_rpc_method_handler(answer_name, **codec),
            "Slow": grpc.unary_stream_rpc_method_handler(slow, **codec),
        },
    )

    def add(server: aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return ServiceRegistration(SERVICE, add)


async def _serve(stack: AsyncExitStack, settings: CommonSettings, name: bytes) -> VoiceServer:
    server = build_server(
        settings=settings, services=[_replica(name)], host="127.0.0.1", port=0, readiness_recheck_seconds=0.05
    )
    await server.start()
    stack.push_async_callback(server.stop, 0)
    return server


async def test_internal_calls_are_spread_over_every_address_of_the_target() -> None:
    settings = CommonSettings()
    async with AsyncExitStack() as stack:
        replicas = [await _serve(stack, settings, f"replica-{index}".encode()) for index in range(3)]
        # What a headless Service's name resolves to: one address per pod.
        target = "ipv4:" + ",".join(f"127.0.0.1:{replica.port}" for replica in replicas)
        channel = internal_channel(target, settings)
        stack.push_async_callback(channel.close, None)
        name = channel.unary_unary(f"/{SERVICE}/Name", _identity, _identity)
        await channel.channel_ready()
        answers = Counter([await name(b"", timeout=CALL_SECONDS) for _ in range(30)])
    # pick_first (gRPC's default) would answer replica-0 thirty times.
    assert set(answers) == {b"replica-0", b"replica-1", b"replica-2"}, answers
    assert min(answers.values()) >= 5, answers


async def test_a_call_site_may_choose_its_own_service_config() -> None:
    settings = CommonSettings()
    pick_first = '{"loadBalancingConfig": [{"pick_first": {}}]}'
    async with AsyncExitStack() as stack:
        replicas = [await _serve(stack, settings, f"replica-{index}".encode()) for index in range(2)]
        target = "ipv4:" + ",".join(f"127.0.0.1:{replica.port}" for replica in replicas)
        channel = internal_channel(target, settings, options=[("grpc.service_config", pick_first)])
        stack.push_async_callback(channel.close, None)
        name = channel.unary_unary(f"/{SERVICE}/Name", _identity, _identity)
        answers = {await name(b"", timeout=CALL_SECONDS) for _ in range(10)}
    assert answers == {b"replica-0"}


def test_connection_age_is_a_server_option_and_zero_turns_it_off() -> None:
    assert connection_age_options(CommonSettings()) == [("grpc.max_connection_age_ms", 300_000)]
    assert connection_age_options(CommonSettings(grpc_max_connection_age_seconds=0)) == []
    with pytest.raises(ValueError):
        CommonSettings(grpc_max_connection_age_seconds=-1)


async def test_an_aged_connection_lets_its_running_stream_finish_and_new_calls_still_work() -> None:
    # Connections live 0.3 s; the stream runs about 1.5 s on one of them, and calls keep being made meanwhile.
    settings = CommonSettings(grpc_max_connection_age_seconds=0.3)
    async with AsyncExitStack() as stack:
        replica = await _serve(stack, settings, b"replica-0")
        channel = internal_channel(f"127.0.0.1:{replica.port}", settings)
        stack.push_async_callback(channel.close, None)
        slow = channel.unary_stream(f"/{SERVICE}/Slow", _identity, _identity)
        name = channel.unary_unary(f"/{SERVICE}/Name", _identity, _identity)

        async def stream() -> list[bytes]:
            return [message async for message in slow(b"15,0.1", timeout=CALL_SECONDS * 3)]

        streaming = asyncio.create_task(stream())
        answers = []
        while not streaming.done():
            answers.append(await name(b"", timeout=CALL_SECONDS))
            await asyncio.sleep(0.05)
        messages = await streaming
    assert messages == [str(index).encode() for index in range(15)]
    assert answers and set(answers) == {b"replica-0"}
