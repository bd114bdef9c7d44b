"""The one place where errors become gRPC status codes, messages and rich details (google.rpc).

A service whose errors voice_common cannot know of (a database driver's) hands in an :data:`ErrorMapper` through its
``ServiceRegistration``, so that a process without a database never imports one (see ``database_errors``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from voice_common import errors
from voice_common.errors import shortened
from voice_common.object_store import ObjectNotFound, ObjectStoreError

ERROR_DOMAIN = "voice.platform"
# The message and the details travel in trailing metadata, twice over (grpc-message, and the Status inside
# grpc-status-details-bin, base64), and a client refuses trailing metadata past 8 KiB (soft) to 16 KiB (hard) with
# a RESOURCE_EXHAUSTED that hides the real answer. Messages quote client values bounded (errors.quoted); these caps
# keep any message that still grew long (many violations, long non-ASCII text) well inside the limit.
MAX_MESSAGE_CHARS = 1000
MAX_DESCRIPTION_CHARS = 300
MAX_FIELD_CHARS = 100
MAX_VIOLATIONS = 10
MAX_RESOURCE_NAME_CHARS = 100

ErrorMapper = Callable[[BaseException], tuple[grpc.StatusCode, str] | None]
"""Code and client message for an error of one service's own infrastructure (its database), or None when the error
is not one of them. The message must not quote the error: it goes to the client."""

_CODES: list[tuple[type[Exception], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_for(
    error: BaseException, request_id: str, mappers: Sequence[ErrorMapper] = ()
) -> tuple[grpc.StatusCode, str, status_pb2.Status] | None:
    """Code, message and details for a known error (``mappers`` add the service's own); None for an unknown one
    (which becomes INTERNAL)."""
    code: grpc.StatusCode | None = None
    message = str(error)
    details: list[any_pb2.Any] = []
    if isinstance(error, errors.DomainError):
        message = shortened(error.message, MAX_MESSAGE_CHARS)
        for error_type, candidate in _CODES:
            if isinstance(error, error_type):
                code = candidate
                break
        if error.violations:
            details.append(
                _pack(
                    error_details_pb2.BadRequest(
                        field_violations=[
                            error_details_pb2.BadRequest.FieldViolation(
                                field=shortened(v.field, MAX_FIELD_CHARS),
                                description=shortened(v.description, MAX_DESCRIPTION_CHARS),
                            )
                            for v in error.violations[:MAX_VIOLATIONS]
                        ]
                    )
                )
            )
        if isinstance(error, errors.ResourceExhausted) and error.retry_after_seconds is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        if isinstance(error, errors.NotFound):
            details.append(
                _pack(
                    error_details_pb2.ResourceInfo(
                        resource_type=error.kind,
                        resource_name=shortened(error.resource_id, MAX_RESOURCE_NAME_CHARS),
                    )
                )
            )
    elif isinstance(error, ObjectNotFound):
        code = grpc.StatusCode.DATA_LOSS
        message = (
            f"stored audio is missing (request id {request_id}); an operator can run `voice-admin doctor`"
        )
    elif isinstance(error, ObjectStoreError):
        code = grpc.StatusCode.UNAVAILABLE
        message = "the object store is not answering; retry later"
    else:
        for mapper in mappers:
            mapped = mapper(error)
            if mapped is not None:
                code, message = mapped
                break
    if code is None:
        return None
    reason = type(error).__name__
    details.append(
        _pack(
            error_details_pb2.ErrorInfo(
                reason=reason, domain=ERROR_DOMAIN, metadata={"request_id": request_id}
            )
        )
    )
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return code, message, status
