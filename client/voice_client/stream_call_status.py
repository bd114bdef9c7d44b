"""The real status of a client-streaming gRPC call, kept from grpc.aio's write-failed overwrite.

When a server answers a client-streaming call (stream-unary or stream-stream) with an error while the client is still
writing, the failed write makes grpc.aio replace the call's status with INTERNAL "Internal error from Core" (grpc's
``_AioCall.set_internal_error``), sometimes before the caller reads it: a refusal (NOT_FOUND, INVALID_ARGUMENT, ...)
would then reach the caller as an INTERNAL. :class:`StreamCallStatuses` notes every status grpc gives the call as it
sets it, and :func:`real_error` turns the write-failed error back into the server's answer.

Usage: attach the recorder right after making the call, before awaiting it::

    call = stub.Upload(requests(), timeout=...)
    statuses = StreamCallStatuses(call)
    try:
        response = await call
    except aio.AioRpcError as error:
        error = await real_error(error, statuses)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

# What grpc.aio makes a client call's status when one of its writes fails because the call has just ended. A
# service's own INTERNAL says "internal error (request id ...)", so this pair is never a server's answer.
WRITE_FAILED = (grpc.StatusCode.INTERNAL, "Internal error from Core")
# How long a caller whose call shows WRITE_FAILED waits for the server's real status to come in.
REAL_STATUS_SECONDS = 5.0

TrailingMetadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class CallStatus:
    """A status grpc gave a call: its code, details and trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: TrailingMetadata


def is_write_failed(error: aio.AioRpcError) -> bool:
    """Whether this error is grpc.aio's overwrite after a failed write rather than the server's answer."""
    return (error.code(), error.details()) == WRITE_FAILED


def _settled(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The value of a coroutine that finishes without waiting: a done call's code(), details(),
    trailing_metadata()."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    coroutine.close()
    raise RuntimeError("the call has no status yet")


class StreamCallStatuses:
    """Every status a client-streaming call is given, noted the moment grpc sets it (a done callback), so the
    server's answer is kept even when grpc.aio overwrites it with WRITE_FAILED before the caller reads it."""

    def __init__(self, call: Any, *, wait_seconds: float = REAL_STATUS_SECONDS) -> None:
        self._seen: list[CallStatus] = []
        self._changed = asyncio.Event()
        self._wait_seconds = wait_seconds
        call.add_done_callback(self._note)

    def _note(self, call: Any) -> None:
        # Called by grpc as it sets the status, so the status is there to read; nothing may raise into grpc.
        with contextlib.suppress(RuntimeError):
            metadata = _settled(call.trailing_metadata())
            self._seen.append(
                CallStatus(
                    code=_settled(call.code()),
                    details=_settled(call.details()) or "",
                    trailing_metadata=tuple((k, v) for k, v in metadata or ()),
                )
            )
            self._changed.set()

    async def real_status(self) -> CallStatus | None:
        """The first status that is not WRITE_FAILED, waiting up to ``wait_seconds`` for it; None if none comes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._wait_seconds):
                while True:
                    for status in self._seen:
                        if (status.code, status.details) != WRITE_FAILED:
                            return status
                    self._changed.clear()
                    await self._changed.wait()
        return None


async def real_error(error: aio.AioRpcError, statuses: StreamCallStatuses) -> aio.AioRpcError:
    """``error`` itself, unless it is WRITE_FAILED and the server's real status comes in: then an error carrying
    that status's code, details and trailing metadata (the initial metadata and debug string kept)."""
    if not is_write_failed(error):
        return error
    status = await statuses.real_status()
    if status is None:
        return error
    return aio.AioRpcError(
        status.code,
        initial_metadata=error.initial_metadata(),
        trailing_metadata=aio.Metadata(*status.trailing_metadata),
        details=status.details,
        debug_error_string=error.debug_error_string(),
    )
