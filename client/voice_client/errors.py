"""One exception hierarchy for every failed call: :class:`VoiceError` and a subclass per gRPC status code.

Each carries the gRPC code, the server's message, and what the platform packed into the rich status
(``grpc-status-details-bin``, google.rpc): the ``BadRequest`` field violations (every bad field of a request, in
order), the ``RetryInfo`` delay and the request id (``ErrorInfo``, else the ``x-request-id`` trailer), so a caller
can act on an error without parsing messages::

    try:
        client.profiles.create("")
    except InvalidArgument as error:
        for violation in error.field_violations:
            print(violation.field, violation.description)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation): its path and what is wrong with it."""

    field: str
    description: str


class VoiceError(Exception):
    """A call that failed: ``code`` (grpc.StatusCode), ``message`` (the server's words), ``field_violations``,
    ``retry_after`` (seconds, from RetryInfo; None without one) and ``request_id`` (to quote in a bug report)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
        request_id: str = "",
        method: str = "",
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.field_violations = tuple(field_violations)
        self.retry_after = retry_after
        self.request_id = request_id
        self.method = method

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations:
            text += "".join(f"\n  {v.field}: {v.description}" for v in self.field_violations)
        return text

    @property
    def violations_by_field(self) -> dict[str, str]:
        """The field violations as field -> description."""
        return {violation.field: violation.description for violation in self.field_violations}


class Cancelled(VoiceError):
    code = grpc.StatusCode.CANCELLED


class Unknown(VoiceError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(VoiceError):
    """A bad request: ``field_violations`` lists every bad field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(VoiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(VoiceError):
    """No such resource for this key's tenant (another tenant's ids answer the same)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VoiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(VoiceError):
    """The key lacks the method's scope (the message names it)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(VoiceError):
    """Over a rate or stream limit, or a full queue: ``retry_after`` says when to come back. Without it, gRPC
    refused something too large, which the same request meets again."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(VoiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(VoiceError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(VoiceError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(VoiceError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(VoiceError):
    """A bug on the server; the message has the request id its log holds the traceback under."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(VoiceError):
    """The gateway or a service behind it cannot serve now (down, starting, draining); retrying later works."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(VoiceError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(VoiceError):
    """No key, or a malformed, unknown, revoked or expired one (the message says which)."""

    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: dict[grpc.StatusCode, type[VoiceError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def _seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def error_from_status(
    code: grpc.StatusCode, message: str, trailing_metadata: Any, method: str = ""
) -> VoiceError:
    """The exception for a call that ended with ``code`` and ``message``, its details read from the trailers."""
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    request_id = ""
    for key, value in trailing_metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            request_id = request_id or value
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed blob must not hide the error itself
            continue
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                violations += (FieldViolation(v.field, v.description) for v in bad_request.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                detail.Unpack(retry_info)
                retry_after = _seconds(retry_info.retry_delay)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                error_info = error_details_pb2.ErrorInfo()
                detail.Unpack(error_info)
                request_id = error_info.metadata.get("request_id", "") or request_id
    cls = ERROR_CLASSES.get(code, VoiceError)
    return cls(
        message or code.name,
        code=code,
        field_violations=violations,
        retry_after=retry_after,
        request_id=request_id,
        method=method,
    )


def error_from_rpc(error: grpc.RpcError, method: str = "") -> VoiceError:
    """The exception for a failed call of the sync or the asyncio API (both raise a grpc.Call as RpcError)."""
    call: Any = error
    try:
        code: grpc.StatusCode = call.code()
        message: str = call.details() or ""
        trailers = call.trailing_metadata()
    except AttributeError:  # an RpcError that is not a call (not raised by grpc's own stubs)
        return Unknown(str(error) or type(error).__name__, method=method)
    return error_from_status(code, message, trailers, method)
