"""A grpc.aio client race the tests must tell apart from a server's answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio


def lost_to_a_late_write(error: aio.AioRpcError) -> bool:
    """grpc/grpc#36066 (open in grpcio 1.85): an aio client still writing a request stream when the server has
    already answered (a bad first message, a drain) may fail its write and report INTERNAL "Internal error from Core"
    in place of the server's status. That INTERNAL comes from the client library, not from the server (a server's
    INTERNAL carries the request id in its message); a test makes the call again, or asserts what the server saw."""
    return (
        error.code() == grpc.StatusCode.INTERNAL
        and error.details() == "Internal error from Core"
        and "SendMessageOperation" in (error.debug_error_string() or "")
    )


async def server_answer(start: Callable[[], Any]) -> aio.AioRpcError:
    """The error the server answered a call with: ``start()`` makes the call (awaited, or drained when it streams
    responses); a call whose answer the client lost to its own late write (:func:`lost_to_a_late_write`) is made
    again, up to three times. A call that succeeds fails the test."""
    for _ in range(3):
        call = start()
        try:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
        except aio.AioRpcError as error:
            if lost_to_a_late_write(error):
                continue
            return error
        raise AssertionError("the call succeeded; the test expected the server to refuse it")
    raise AssertionError("three calls in a row lost the server's answer to a late write")
