"""A callee's RESOURCE_EXHAUSTED, as a calling service translates it: retry only when the callee said so."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from voice_common.errors import ResourceExhausted, Unavailable
from voice_common.remote_errors import translate_error


async def _answer(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    if request == b"huge":
        # What an unbounded echo of a 10 000-character id did: the answer's metadata outgrows the client's limit,
        # and the client's own library reports RESOURCE_EXHAUSTED in place of the server's status.
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "x" * 20_000)
    await context.abort(grpc.StatusCode.UNAVAILABLE, "down for maintenance")
    return b""


@pytest.fixture
async def channel() -> AsyncIterator[aio.Channel]:
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_answer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened
    await server.stop(0)


async def _error(channel: aio.Channel, request: bytes) -> aio.AioRpcError:
    call = channel.unary_unary("/test.Echo/Call", request_serializer=None, response_deserializer=None)
    with pytest.raises(aio.AioRpcError) as caught:
        await call(request)
    return caught.value


async def test_an_answer_too_large_for_the_client_is_not_told_to_retry(channel: aio.Channel) -> None:
    error = await _error(channel, b"huge")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    translated = translate_error(error, action="read the profile", kind="profile", resource_id="p")
    assert isinstance(translated, ResourceExhausted) and translated.retry_after_seconds is None
    assert "retry" not in translated.message and "refused again" in translated.message


async def test_an_unavailable_callee_is_still_told_to_retry(channel: aio.Channel) -> None:
    translated = translate_error(
        await _error(channel, b"down"), action="read the profile", kind="profile", resource_id="p"
    )
    assert isinstance(translated, Unavailable) and "retry later" in translated.message
