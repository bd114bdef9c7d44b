"""The gateway's one interceptor: request id, authentication, scope, rate limits, metrics and the access log,
around every method (health aside: it answers anyone, as Kubernetes probes send no key)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from voice_common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from voice_common.observability import method_var, request_id_var, tenant_var
from voice_common.resource_ids import is_client_token
from voice_common.server.interceptor import REQUEST_ID_KEY, error_answer, guarded_handler
from voice_gateway import metrics
from voice_gateway.authentication import Authenticator, Principal
from voice_gateway.calls import CallRecord, enter_call
from voice_gateway.rate_limits import KeyLimiter, Limits
from voice_gateway.routes import Route

log = logging.getLogger("voice.access")
_OPEN_PREFIX = "/grpc.health.v1.Health/"
# Who a call is until its key is checked (and stays, when the key is refused).
_NOBODY = Principal("", "", "", frozenset(), Limits(0, 0, 0))


# A refusal's reason for the metric's label, from its message: the gateway's own (missing, malformed) and the
# profile service's answers to VerifyApiKey ("… was revoked at …", "… expired at …", "unknown API key").
_REASONS = (
    ("needs an API key", "missing"),
    ("must be 'Bearer", "malformed"),
    ("sent more than once", "malformed"),
    ("revoked", "revoked"),
    ("expired", "expired"),
)


def _failure_reason(error: Exception) -> str:
    if isinstance(error, PermissionDenied):
        return "scope"
    message = str(error)
    return next((reason for phrase, reason in _REASONS if phrase in message), "unknown")


class _Call:
    """One call's bookkeeping, whatever its shape."""

    def __init__(self, method: str, route: Route | None, metadata: tuple[tuple[str, Any], ...]) -> None:
        self.method = method
        self.route = route
        self.metadata = metadata
        client_id = next((value for key, value in metadata if key == REQUEST_ID_KEY), "")
        self.request_id = (
            client_id if isinstance(client_id, str) and is_client_token(client_id) else uuid.uuid4().hex
        )
        self.record = CallRecord(self.request_id, _NOBODY)
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK


class GatewayInterceptor(aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        routes: Mapping[str, Route],
        limiter: KeyLimiter,
        tenant_label: Callable[[str], str],
    ) -> None:
        self._authenticator = authenticator
        self._routes = routes
        self._limiter = limiter
        self._tenant_label = tenant_label

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIX):
            return handler
        route = self._routes.get(method)
        metadata = tuple(handler_call_details.invocation_metadata or ())
        return guarded_handler(
            handler, lambda context: self._guarded(_Call(method, route, metadata), context)
        )

    @contextlib.asynccontextmanager
    async def _guarded(self, call: _Call, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        request_id_var.set(call.request_id)
        method_var.set(call.method)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))
        streaming = call.route is not None and call.route.streaming
        try:
            async with contextlib.AsyncExitStack() as stack:
                principal = await self._admit(call)
                if streaming:
                    try:
                        stack.enter_context(
                            self._limiter.stream(principal.key_id, principal.prefix, principal.limits)
                        )
                    except ResourceExhausted:
                        metrics.RATE_LIMITED.labels("streams", self._tenant_label(principal.tenant)).inc()
                        raise
                    metrics.STREAMS_IN_FLIGHT.labels(call.method).inc()
                    stack.callback(metrics.STREAMS_IN_FLIGHT.labels(call.method).dec)
                yield
        except asyncio.CancelledError:
            call.code = grpc.StatusCode.CANCELLED
            raise
        except aio.AbortError:
            raise  # the forwarding handler ended the call with the backend's status
        except Exception as error:
            await self._fail(call, context, error)
        finally:
            self._finish(call, context)

    async def _admit(self, call: _Call) -> Principal:
        try:
            principal = await self._authenticator.authenticate(call.metadata)
            call.record.principal = principal
            tenant_var.set(principal.tenant)
            if call.route is not None and call.route.scope not in principal.scopes:
                raise PermissionDenied(
                    f"API key {principal.prefix} does not have the {call.route.scope!r} scope that "
                    f"{call.route.service}/{call.route.name} needs (it has: {', '.join(sorted(principal.scopes))})"
                )
        except (Unauthenticated, PermissionDenied) as error:
            metrics.AUTH_FAILURES.labels(_failure_reason(error)).inc()
            raise
        try:
            self._limiter.admit(principal.key_id, principal.prefix, principal.limits)
        except ResourceExhausted:
            metrics.RATE_LIMITED.labels("rate", self._tenant_label(principal.tenant)).inc()
            raise
        enter_call(call.record)
        return principal

    async def _fail(self, call: _Call, context: aio.ServicerContext[Any, Any], error: Exception) -> None:
        call.code, message, trailers = error_answer(error, call.request_id)
        await context.abort(call.code, message, trailing_metadata=trailers)

    def _finish(self, call: _Call, context: aio.ServicerContext[Any, Any]) -> None:
        if call.code is grpc.StatusCode.OK:
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                call.code = code
        elapsed = time.perf_counter() - call.started
        principal = call.record.principal
        tenant = self._tenant_label(principal.tenant) if principal.tenant else "none"
        metrics.CALLS.labels(call.method, call.code.name, tenant).inc()
        metrics.CALL_SECONDS.labels(call.method).observe(elapsed)
        if call.route is not None:
            metrics.FORWARDED_BYTES.labels(call.method, "in").inc(call.record.bytes_in)
            metrics.FORWARDED_BYTES.labels(call.method, "out").inc(call.record.bytes_out)
        if log.isEnabledFor(logging.INFO):
            # Never the key, the audio or the text: the key's public prefix and sizes only.
            log.info(
                "rpc",
                extra={
                    "rpc_method": call.method,
                    "code": call.code.name,
                    "key_prefix": principal.prefix,
                    "duration_ms": round(elapsed * 1000, 2),
                    "bytes_in": call.record.bytes_in,
                    "bytes_out": call.record.bytes_out,
                },
            )
