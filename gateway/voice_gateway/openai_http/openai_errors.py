"""Errors in OpenAI's JSON shape, so that the official ``openai`` client raises the exception it would against
OpenAI (``BadRequestError``, ``AuthenticationError``, ``PermissionDeniedError``, ``NotFoundError``,
``RateLimitError``...) and retries what it retries (429 and 5xx, waiting ``retry-after``).

Route modules raise :class:`OpenAIHTTPError` for what they refuse themselves, and let a ``VoiceError`` of the gRPC
call propagate: the app's handler (voice_gateway.openai_http.http_app) turns it into one with
:func:`from_voice_error`. The body is always ``{"error": {"message", "type", "param", "code"}}``; a failure the
caller cannot act on (INTERNAL, UNKNOWN, DATA_LOSS...) says only that it failed and its request id, never
internals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import grpc

from voice_client.errors import VoiceError

# OpenAI's error "type" strings for the statuses this face answers with.
INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_error"
SERVER = "server_error"

_TYPE_OF_STATUS = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: INVALID_REQUEST,  # OpenAI's own 404s (an unknown model) say invalid_request_error
    409: INVALID_REQUEST,
    413: INVALID_REQUEST,
    422: INVALID_REQUEST,
    429: RATE_LIMIT,
}


class OpenAIHTTPError(Exception):
    """An HTTP error answered in OpenAI's shape: ``status``, ``message`` (shown to the caller), OpenAI's ``type``
    (by default the one OpenAI uses for the status), the request field at fault (``param``), a machine-readable
    ``code`` (``model_not_found``, ``invalid_api_key``, ``rate_limit_exceeded``...) and extra response
    ``headers`` (``retry-after``)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_OF_STATUS.get(status, SERVER)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def retry_after_headers(seconds: float | None) -> dict[str, str]:
    """``retry-after`` in whole seconds (at least 1: the official client reads it as an integer first) and
    ``retry-after-ms`` (the client's exact reading, which it prefers)."""
    if seconds is None:
        return {}
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }


def from_voice_error(error: VoiceError) -> OpenAIHTTPError:
    """The HTTP answer for a failed gRPC call of the platform: INVALID_ARGUMENT → 400 (``param`` from the first
    field violation), UNAUTHENTICATED → 401, PERMISSION_DENIED → 403, NOT_FOUND → 404, ALREADY_EXISTS → 409,
    FAILED_PRECONDITION → 400, RESOURCE_EXHAUSTED → 429 with ``retry-after`` when the server said when to come
    back (a rate limit, a full queue), else 413 (a message over the size limits), UNAVAILABLE → 503 (with
    ``retry-after`` when known), DEADLINE_EXCEEDED → 504, anything else → 500 without the server's words."""
    code = error.code
    message = error.message
    if error.field_violations:
        details = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
        message = f"{message} ({details})" if details not in message else message
    param = error.field_violations[0].field if error.field_violations else None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return OpenAIHTTPError(400, message, param=param)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return OpenAIHTTPError(400, message, param=param, code="failed_precondition")
    if code == grpc.StatusCode.OUT_OF_RANGE:
        return OpenAIHTTPError(400, message, param=param)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return OpenAIHTTPError(401, message, code="invalid_api_key")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return OpenAIHTTPError(403, message, code="insufficient_permissions")
    if code == grpc.StatusCode.NOT_FOUND:
        return OpenAIHTTPError(404, message, code="not_found")
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return OpenAIHTTPError(409, message, code="already_exists")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if error.retry_after is not None:
            return OpenAIHTTPError(
                429, message, code="rate_limit_exceeded", headers=retry_after_headers(error.retry_after)
            )
        return OpenAIHTTPError(413, message, code="payload_too_large")
    if code == grpc.StatusCode.UNAVAILABLE:
        return OpenAIHTTPError(
            503, message, SERVER, code="service_unavailable", headers=retry_after_headers(error.retry_after)
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return OpenAIHTTPError(504, "the request took too long", SERVER, code="timeout")
    return OpenAIHTTPError(
        500,
        "the server failed to handle the request"
        + (f" (request id {error.request_id})" if error.request_id else ""),
        SERVER,
    )
