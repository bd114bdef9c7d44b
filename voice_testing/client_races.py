"""A grpc.aio client race the tests must tell apart from a server's answer."""

from __future__ import annotations

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
