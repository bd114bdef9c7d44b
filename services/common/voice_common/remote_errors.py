"""Errors of another platform service, called over gRPC, as domain errors of the calling service.

A service that calls another (TTS and ASR call the profile service; the profile service calls ASR) translates the
callee's status into :mod:`voice_common.errors`, so its own status mapping answers its client precisely:

* ``NOT_FOUND`` -> :class:`RemoteNotFound` (a :class:`~voice_common.errors.NotFound`) carrying the callee's own
  message and, from its rich status details, the resource's kind and id;
* ``INVALID_ARGUMENT`` -> :class:`~voice_common.errors.InvalidArgument`, ``FAILED_PRECONDITION`` ->
  :class:`~voice_common.errors.FailedPrecondition`, both with the callee's message;
* anything else (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``INTERNAL``, a closed channel, ...) ->
  :class:`~voice_common.errors.Unavailable`: the callee cannot serve the request now.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from voice_common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class RemoteNotFound(NotFound):
    """A NOT_FOUND answer of another service, keeping that service's own message."""

    def __init__(self, message: str, kind: str, resource_id: str) -> None:
        super().__init__(kind, resource_id)
        self.message = message
        self.args = (message,)


def _resource_info(error: aio.AioRpcError) -> error_details_pb2.ResourceInfo | None:
    """The ResourceInfo a platform service packs into a NOT_FOUND's rich status, if any."""
    try:
        # aio.Metadata iterates as (key, value) pairs; grpc-stubs types its items as _Metadatum objects.
        trailing: Any = error.trailing_metadata() or ()
        for key, value in trailing:
            if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
                continue
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
                    info = error_details_pb2.ResourceInfo()
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
            info = _resource_info(error)
            if info is not None and info.resource_type:
                kind, resource_id = info.resource_type, info.resource_name
            message = details or f"{kind} {resource_id!r} not found"
            return RemoteNotFound(message, kind, resource_id)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(details or f"{service} rejected the request to {action}")
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return FailedPrecondition(details or f"{service} cannot {action} now")
        reason = f"{code.name}: {details}" if details else code.name
    else:
        reason = str(error) or type(error).__name__
    return Unavailable(f"{service} is not answering (could not {action}); retry later: {reason}")
