"""What a failed call's rich status (google.rpc, in ``grpc-status-details-bin``) says, for the services' tests."""

from __future__ import annotations

from typing import Any

from google.rpc import error_details_pb2, status_pb2
from grpc import aio


def trailing_metadata_bytes(error: aio.AioRpcError) -> int:
    """The size of the error's trailing metadata as sent (keys and values), which a client refuses past 8-16 KiB."""
    trailing: Any = error.trailing_metadata() or ()  # (key, value) pairs; grpc's stubs type them otherwise
    return sum(
        len(key) + len(value if isinstance(value, bytes) else value.encode()) for key, value in trailing
    )


def field_violations(error: aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of the error's rich status: field -> description (in order)."""
    trailing: Any = error.trailing_metadata() or ()
    found: dict[str, str] = {}
    for key, value in trailing:
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                detail.Unpack(bad_request)
                found.update((v.field, v.description) for v in bad_request.field_violations)
    return found
