"""Forwarding: every public method, in its own shape, to its backend, as opaque bytes.

No message is parsed or serialised again: the generic handler has no (de)serialisers, so what the client sent is what
the backend gets, byte for byte, and back. Flow control runs end to end because each direction holds at most one
message: a request is read from the client only once the previous one was handed to the backend call
(``await call.write``), and a response is read from the backend only once the previous one was written to the client
(the server awaits each ``yield``). A slow client therefore slows the backend, and the gateway's memory stays
bounded by one message per direction per call (plus HTTP/2's windows).

What passes through unchanged: response headers, messages, status code and message, trailers (with
``grpc-status-details-bin``: BadRequest, RetryInfo, ErrorInfo). What the gateway sets: ``x-voice-tenant`` (from the
key, replacing the client's), ``x-request-id`` (the client's or a new one) and the internal credential's token
(TLS, when configured, is the channel's). A deadline is passed on only when the caller set one (grpc/grpc#26236: a made-up one would cut long
streams). The client going away cancels the backend call at once (``finally: call.cancel()``), and the
``CancelledError`` is re-raised, never swallowed (grpc/grpc#43360 leaks native memory when it is).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from grpc import aio

from voice_client.stream_call_status import StreamCallStatuses, real_error
from voice_common.server.interceptor import StreamCutoff
from voice_gateway.calls import CallRecord, current_call
from voice_gateway.routes import Route

# Metadata a client may not pass on: its credential, the tenant (the key decides), the internal credential (only
# channels add it), the request id (the gateway sets the one it logs), and what gRPC itself owns.
_NOT_FORWARDED = {"authorization", "x-voice-tenant", "x-voice-internal-token", "x-request-id", "user-agent"}
_RESERVED_PREFIXES = ("grpc-", ":")
REQUEST_ID_KEY = "x-request-id"
TENANT_KEY = "x-voice-tenant"


class Backend:
    """A backend service: its name (for messages), its target and the channel to it."""

    def __init__(self, name: str, target: str, channel: aio.Channel) -> None:
        self.name = name
        self.target = target
        # Typed loosely: grpc-stubs know neither multi-callables without (de)serialisers nor aio.EOF.
        self.channel: Any = channel

    def unavailable_message(self, details: str | None) -> str:
        return (
            f"the {self.name} service is unavailable (the gateway cannot reach {self.target}: {details}); the "
            "gateway reconnects by itself: retry shortly"
        )


def forwarded_metadata(
    metadata: Any, tenant: str, request_id: str, credential: tuple[tuple[str, str], ...] = ()
) -> tuple[tuple[str, str | bytes], ...]:
    """The backend call's metadata: the client's, less what it may not pass on, plus the tenant, the request id
    and the internal credential."""
    kept = tuple(
        (key, value)
        for key, value in metadata or ()
        if key not in _NOT_FORWARDED and not key.startswith(_RESERVED_PREFIXES)
    )
    return (*kept, (TENANT_KEY, tenant), (REQUEST_ID_KEY, request_id), *credential)


class Forwarder(grpc.GenericRpcHandler):
    """The generic handler of every public method; anything else (internal or unknown) is UNIMPLEMENTED."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        backends: Mapping[str, Backend],
        cutoff: StreamCutoff,
        credential: tuple[tuple[str, str], ...] = (),
    ) -> None:
        # Built once: a handler and a backend multi-callable per method, nothing per call.
        self._handlers = {
            path: _ForwardedMethod(route, backends[route.backend], cutoff, credential).handler()
            for path, route in routes.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)


class _ForwardedMethod:
    def __init__(
        self, route: Route, backend: Backend, cutoff: StreamCutoff, credential: tuple[tuple[str, str], ...]
    ) -> None:
        self._route = route
        self._backend = backend
        self._cutoff = cutoff
        self._credential = credential
        channel = backend.channel
        if route.request_streaming and route.response_streaming:
            self._upstream = channel.stream_stream(route.method)
        elif route.request_streaming:
            self._upstream = channel.stream_unary(route.method)
        elif route.response_streaming:
            self._upstream = channel.unary_stream(route.method)
        else:
            self._upstream = channel.unary_unary(route.method)

    def handler(self) -> grpc.RpcMethodHandler:
        route = self._route
        if route.request_streaming and route.response_streaming:
            return grpc.stream_stream_rpc_method_handler(self.stream_stream)
        if route.request_streaming:
            return grpc.stream_unary_rpc_method_handler(self.stream_unary)
        if route.response_streaming:
            return grpc.unary_stream_rpc_method_handler(self.unary_stream)
        return grpc.unary_unary_rpc_method_handler(self.unary_unary)

    def _outgoing(self, context: aio.ServicerContext[Any, Any], record: CallRecord) -> dict[str, Any]:
        """The backend call's metadata and deadline (only when the caller set one: grpc/grpc#26236)."""
        return {
            "metadata": forwarded_metadata(
                context.invocation_metadata(), record.principal.tenant, record.request_id, self._credential
            ),
            "timeout": context.time_remaining(),
        }

    async def _relay_headers(self, call: Any, context: aio.ServicerContext[Any, Any]) -> None:
        headers = await call.initial_metadata()
        if headers:
            await context.send_initial_metadata(tuple(headers))

    async def _relay_trailers(self, call: Any, context: aio.ServicerContext[Any, Any]) -> None:
        trailers = await call.trailing_metadata()
        if trailers:
            context.set_trailing_metadata(tuple(trailers))

    async def _fail(
        self,
        error: aio.AioRpcError,
        context: aio.ServicerContext[Any, Any],
        statuses: StreamCallStatuses | None = None,
    ) -> None:
        """End the client's call with the backend's status, message and trailers, as they came. A streamed call's
        ``statuses`` keep the backend's answer when grpc.aio overwrote it with WRITE_FAILED (one refused upload in 30
        or so, found by tests/test_fuzz_public_rpcs.py): the client gets that answer, not an INTERNAL."""
        if statuses is not None:
            error = await real_error(error, statuses)
        received: Any = error.trailing_metadata() or ()
        trailers = tuple((key, value) for key, value in received)
        details = error.details()
        code = error.code()
        if code is grpc.StatusCode.UNAVAILABLE and not any(key == REQUEST_ID_KEY for key, _ in trailers):
            # No service answered (its answers always carry a request id): the connection failed.
            details = self._backend.unavailable_message(details)
        await context.abort(code, details or "", trailing_metadata=trailers)

    async def unary_unary(self, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        record = current_call()
        record.bytes_in += len(request)
        call = self._upstream(request, **self._outgoing(context, record))
        try:
            await self._relay_headers(call, context)
            response: bytes = await call
            await self._relay_trailers(call, context)
        except aio.AioRpcError as error:
            await self._fail(error, context)
            raise AssertionError("unreachable: abort raises") from error
        finally:
            call.cancel()  # a no-op once the call ended; ends the backend's work when the client went away
        record.bytes_out += len(response)
        return response

    async def unary_stream(
        self, request: bytes, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        record = current_call()
        record.bytes_in += len(request)
        call = self._upstream(request, **self._outgoing(context, record))
        try:
            await self._relay_headers(call, context)
            async for response in call:
                record.bytes_out += len(response)
                yield response
            await self._relay_trailers(call, context)
        except aio.AioRpcError as error:
            await self._fail(error, context)
        finally:
            call.cancel()

    async def stream_unary(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> bytes:
        record = current_call()
        call = self._upstream(**self._outgoing(context, record))
        statuses = StreamCallStatuses(call)
        pump = asyncio.create_task(self._pump(requests, call, record))
        try:
            await self._relay_headers(call, context)
            response: bytes = await call
            await self._relay_trailers(call, context)
        except aio.AioRpcError as error:
            await self._fail(error, context, statuses)
            raise AssertionError("unreachable: abort raises") from error
        finally:
            call.cancel()
            await _stopped(pump)
        record.bytes_out += len(response)
        return response

    async def stream_stream(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        record = current_call()
        call = self._upstream(**self._outgoing(context, record))
        statuses = StreamCallStatuses(call)
        pump = asyncio.create_task(self._pump(requests, call, record))
        try:
            await self._relay_headers(call, context)
            while True:
                response = await call.read()
                if response is aio.EOF:  # type: ignore[attr-defined]
                    break
                record.bytes_out += len(response)
                yield response
            await self._relay_trailers(call, context)
        except aio.AioRpcError as error:
            await self._fail(error, context, statuses)
        finally:
            call.cancel()
            await _stopped(pump)

    async def _pump(self, requests: AsyncIterator[bytes], call: Any, record: CallRecord) -> None:
        """The client's messages to the backend, one at a time; then the end of the stream, unless the stream ended
        because the gateway cut the call off (a drain's end), which must not look like a complete upload."""
        try:
            async for message in requests:
                record.bytes_in += len(message)
                await call.write(message)
            if self._cutoff.reached:
                call.cancel()
                return
            await call.done_writing()
        except (aio.AioRpcError, asyncio.InvalidStateError):
            # The backend call ended first (an error, a refusal): its status is what the handler reports.
            return
        except Exception:
            # The client's stream broke: the backend must not take what came for the whole of it.
            call.cancel()
            raise


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
