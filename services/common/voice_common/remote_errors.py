"""Errors of another platform service, called over gRPC, as domain errors of the calling service.

A service that calls another (TTS and ASR call the profile service; the profile service calls ASR) translates the
callee's status into :mod:`voice_common.errors`, so its own status mapping answers its client precisely:

* ``NOT_FOUND`` -> :class:`RemoteNotFound` (a :class:`~voice_common.errors.NotFound`) carrying the callee's own
  message and, from its rich status details, the resource's kind and id;
* ``INVALID_ARGUMENT`` -> :class:`~voice_common.errors.InvalidArgument`, ``FAILED_PRECONDITION`` ->
  :class:`~voice_common.errors.FailedPrecondition`, both with the callee's message;
* ``RESOURCE_EXHAUSTED`` -> :class:`~voice_common.errors.ResourceExhausted`: with the callee's retry delay when
  its status carries a ``RetryInfo`` (a full queue: retrying later works); without one it is gRPC's own refusal
  of something too large (a message, or metadata over its limit), which the same request meets again, so it is
  never told to retry;
* anything else (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``INTERNAL``, a closed channel, ...) ->
  :class:`~voice_common.errors.Unavailable`: the callee cannot serve the request now.
"""

from __future__ import annotations

from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from voice_common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    quoted,
)
from voice_common.server.durations import seconds_of

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
T = TypeVar("T", error_details_pb2.ResourceInfo, error_details_pb2.RetryInfo)


class RemoteNotFound(NotFound):
    """A NOT_FOUND answer of another service, keeping that service's own message."""

    def __init__(self, message: str, kind: str, resource_id: str) -> None:
        super().__init__(kind, resource_id)
        self.message = message
        self.args = (message,)


def _detail(error: aio.AioRpcError, kind: type[T]) -> T | None:
    """The detail of type ``kind`` (ResourceInfo, RetryInfo) a platform service packed into its rich status."""
    try:
        # aio.Metadata iterates as (key, value) pairs; grpc-stubs types its items as _Metadatum objects.
        trailing: Any = error.trailing_metadata() or ()
        for key, value in trailing:
            if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(kind.DESCRIPTOR):
                    info = kind()
                    detail.Unpack(info)
                    return info
    except Exception:  # a malformed details blob must not hide the error itself
        return None
    return None


def translate_error(
    error: BaseException, *, action: str, kind: str, resource_id: str, service: str = "the profile service"
) -> DomainError:
    """The domain error for a failed call to ``service`` (``action`` says what the call was for).

    ``kind`` and ``resource_id`` name the resource the call was about; they are used for a NOT_FOUND whose
    status carries no ResourceInfo.
    """
    if isinstance(error, aio.AioRpcError):
        code = error.code()
        details = error.details() or ""
        if code == grpc.StatusCode.NOT_FOUND:
            info = _detail(error, error_details_pb2.ResourceInfo)
            if info is not None and info.resource_type:
                kind, resource_id = info.resource_type, info.resource_name
            message = details or f"{kind} {quoted(resource_id)} not found"
            return RemoteNotFound(message, kind, resource_id)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(details or f"{service} rejected the request to {action}")
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return FailedPrecondition(details or f"{service} cannot {action} now")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry = _detail(error, error_details_pb2.RetryInfo)
            if retry is not None:
                return ResourceExhausted(
                    details or f"{service} is too busy to {action}; retry later",
                    retry_after_seconds=seconds_of(retry.retry_delay),
                )
            return ResourceExhausted(
                f"{service} refused the request to {action} as too large ({details or code.name}); the same "
                "request will be refused again"
            )
        reason = f"{code.name}: {details}" if details else code.name
    else:
        reason = str(error) or type(error).__name__
    return Unavailable(f"{service} is not answering (could not {action}); retry later: {reason}")
