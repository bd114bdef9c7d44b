"""One server interceptor for every service: the internal credential, request id, tenant, error mapping, metrics and
access logs."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc
from grpc import aio

from voice_common.errors import Unauthenticated, Unavailable
from voice_common.internal_channel import INTERNAL_TOKEN_KEY
from voice_common.observability import (
    GRPC_IN_FLIGHT,
    GRPC_LATENCY,
    GRPC_REQUESTS,
    method_var,
    request_id_var,
    tenant_var,
)
from voice_common.resource_ids import is_client_token
from voice_common.server.status_mapping import ErrorMapper, status_for
from voice_common.tenancy import TENANT_METADATA_KEY, TenantResolver

log = logging.getLogger("voice.access")
REQUEST_ID_KEY = "x-request-id"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Infrastructure services (health, reflection) are not tenant-owned, nor is checking an API key: the key names its
# tenant, and the gateway asks before it knows it.
_UNTENANTED_PREFIXES = ("/grpc.", "/voice.auth.v1.KeyVerificationService/")
# Health answers without the internal credential: Kubernetes' probes send no metadata. Reflection does not: it would
# tell anyone what the internal services offer.
_OPEN_PREFIXES = ("/grpc.health.v1.",)
_NOT_INTERNAL = (
    "this service accepts calls only from the gateway and the platform's services (the internal credential, "
    "x-voice-internal-token, is missing or wrong): call through the gateway"
)


class _RpcScope:
    """Everything done around one RPC, whatever its shape."""

    def __init__(
        self,
        method: str,
        metadata: Sequence[tuple[str, str]],
        tenants: TenantResolver,
        error_mappers: Sequence[ErrorMapper],
        internal_token: bytes,
    ) -> None:
        self.method = method
        self.service, _, self.short_method = method.lstrip("/").rpartition("/")
        self.tenant_values = [value for key, value in metadata if key == TENANT_METADATA_KEY]
        self.tenants = tenants
        self.error_mappers = error_mappers
        # Only whether it matches is kept: the token itself must never reach a log.
        # Exactly one value: a caller cannot slip a guess in next to a forwarded token, or the other way round.
        presented = [value for key, value in metadata if key == INTERNAL_TOKEN_KEY]
        self.credential_accepted = not internal_token or (
            len(presented) == 1 and hmac.compare_digest(presented[0].encode(), internal_token)
        )
        client_id = next((value for key, value in metadata if key == REQUEST_ID_KEY), "")
        # Echoed in trailing metadata, status details and logs, so only a short token is taken; anything else (too
        # long, spaces, control characters) gets a fresh one, as a request without one does.
        self.request_id = client_id if is_client_token(client_id) else uuid.uuid4().hex
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK

    def enter(self, context: aio.ServicerContext[Any, Any]) -> None:
        request_id_var.set(self.request_id)
        method_var.set(self.method)
        GRPC_IN_FLIGHT.labels(self.service).inc()
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id),))
        if not self.credential_accepted and not self.method.startswith(_OPEN_PREFIXES):
            raise Unauthenticated(_NOT_INTERNAL)
        if not self.method.startswith(_UNTENANTED_PREFIXES):
            tenant_var.set(self.tenants.resolve(self.tenant_values))

    async def fail(self, context: aio.ServicerContext[Any, Any], error: BaseException) -> None:
        self.code, message, trailers = error_answer(error, self.request_id, self.error_mappers)
        await context.abort(self.code, message, trailing_metadata=trailers)

    def exit(self, context: aio.ServicerContext[Any, Any]) -> None:
        GRPC_IN_FLIGHT.labels(self.service).dec()
        if self.code is grpc.StatusCode.OK:
            code = context.code() if hasattr(context, "code") else None
            if isinstance(code, grpc.StatusCode):
                self.code = code
        elapsed = time.perf_counter() - self.started
        GRPC_REQUESTS.labels(self.service, self.short_method, self.code.name).inc()
        GRPC_LATENCY.labels(self.service, self.short_method).observe(elapsed)
        if log.isEnabledFor(logging.INFO) and not self.method.startswith(_UNTENANTED_PREFIXES):
            log.info(
                "rpc",
                extra={
                    "code": self.code.name,
                    "duration_ms": round(elapsed * 1000, 2),
                    "rpc_method": self.method,
                },
            )


def guarded_handler(
    handler: grpc.RpcMethodHandler,
    guard: Callable[[aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]],
    requests: Callable[[AsyncIterator[Any]], AsyncIterator[Any]] | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` with each call run inside ``guard(context)`` (what an interceptor does around every call, the
    services' and the gateway's), whatever its shape; ``requests`` wraps a request stream first."""
    # grpc's stubs type handlers for the sync server; under grpc.aio they are coroutine/async-generator functions.
    behavior: Any = (
        handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
    )

    if handler.unary_unary or handler.stream_unary:

        async def unary_response(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with guard(context):
                if requests is not None:
                    request = requests(request)
                return await behavior(request, context)

        factory = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary
            else grpc.stream_unary_rpc_method_handler
        )
        return factory(
            unary_response,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def stream_response(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with guard(context):
            if requests is not None:
                request = requests(request)
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            elif hasattr(result, "__iter__"):
                for response in result:
                    yield response
            else:
                # A handler that sends with context.write() (the stock health Watch, reflection) returns a coroutine.
                await result

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream_response,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def error_answer(
    error: BaseException, request_id: str, error_mappers: Sequence[ErrorMapper] = ()
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    """The status code, message and trailers that answer ``error`` (the services' interceptor and the gateway's).
    An error nothing maps is INTERNAL: its traceback goes to the log, never to the client."""
    mapped = status_for(error, request_id, error_mappers)
    if mapped is None:
        log.error("unhandled error", exc_info=error)
        return (
            grpc.StatusCode.INTERNAL,
            f"internal error (request id {request_id}); the server logged the details",
            ((REQUEST_ID_KEY, request_id),),
        )
    code, message, status = mapped
    return code, message, ((REQUEST_ID_KEY, request_id), (STATUS_DETAILS_KEY, status.SerializeToString()))


class StreamCutoff:
    """Whether the server has cut off the calls still running (the end of a drain's grace period).

    grpc.aio ends the request stream of a call the server cancels exactly as if the client had finished it (its
    reader turns "cancelled" into end-of-stream; the handler learns of the cancellation only at its next await), so
    a handler would take an upload cut off half-way for a complete one and store it. ``VoiceServer.stop`` sets
    ``reached`` just before it cancels the calls; a request stream that ends after that raises instead of ending.
    """

    def __init__(self) -> None:
        self.reached = False


async def _until_cut_off(requests: AsyncIterator[Any], cutoff: StreamCutoff) -> AsyncIterator[Any]:
    async for request in requests:
        yield request
    if cutoff.reached:
        raise Unavailable(
            "the server is shutting down and cut this request stream off before its end; nothing of it was kept: "
            "send it again"
        )


def _is_abort(error: BaseException) -> bool:
    # context.abort() raises this; the status is already set, so it passes through untouched.
    return isinstance(error, aio.AbortError)


class ServerInterceptor(aio.ServerInterceptor):
    def __init__(
        self,
        tenants: TenantResolver,
        cutoff: StreamCutoff | None = None,
        error_mappers: Sequence[ErrorMapper] = (),
        internal_token: str = "",
    ) -> None:
        self._tenants = tenants
        # Empty: no token is asked for (mutual TLS, or a service that accepts anyone).
        self._internal_token = internal_token.encode()
        self._cutoff = cutoff or StreamCutoff()
        # The services' own errors beyond voice_common's (a database's): see status_mapping.ErrorMapper.
        self._error_mappers = tuple(error_mappers)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = [
            (key, value)
            for key, value in (handler_call_details.invocation_metadata or ())
            if isinstance(value, str)
        ]
        tenants = self._tenants
        cutoff = self._cutoff
        error_mappers = self._error_mappers
        internal_token = self._internal_token

        @contextlib.asynccontextmanager
        async def guarded(context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
            scope = _RpcScope(method, metadata, tenants, error_mappers, internal_token)
            try:
                scope.enter(context)
                yield
            except asyncio.CancelledError:
                scope.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:
                if _is_abort(error):
                    raise
                await scope.fail(context, error)
            finally:
                scope.exit(context)

        return guarded_handler(
            handler,
            guarded,
            (lambda requests: _until_cut_off(requests, cutoff)) if handler.request_streaming else None,
        )
