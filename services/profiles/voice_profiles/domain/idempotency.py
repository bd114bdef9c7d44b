"""Client-chosen request ids of uploads: a retry with the same id gets what the first attempt created.

An upload (AddSample, CreateGeneration, ImportProfile) may carry ``request_id``. What it created is recorded under
(tenant, operation, request id) in the transaction that creates it, together with a fingerprint of the request
(its metadata and bytes). A later upload with the same id and the same fingerprint is answered with that resource
and writes nothing; with another fingerprint it is refused (FAILED_PRECONDITION), as Stripe's Idempotency-Key is.
Two uploads with one id at the same time both write their objects, but only one record can commit (the key is
unique): the other discards its objects and answers with the winner's resource. The sweeper forgets records
older than the retention.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from voice_common.errors import FailedPrecondition, InvalidArgument, NotFound, quoted
from voice_common.resource_ids import MAX_CLIENT_TOKEN_CHARS, is_client_token

T = TypeVar("T")

# Hashing a large upload is worth a worker thread (tens of ms for the largest samples).
_HASH_IN_THREAD_BYTES = 1024 * 1024


class UploadOperation(StrEnum):
    """The scope of a request id besides the tenant: the same id may name one upload of each kind."""

    ADD_SAMPLE = "AddSample"
    CREATE_GENERATION = "CreateGeneration"
    IMPORT_PROFILE = "ImportProfile"


def check_request_id(value: str, field: str = "metadata.request_id") -> str:
    """The id as given ("" for none); INVALID_ARGUMENT unless it is 1-128 visible ASCII characters."""
    if value and not is_client_token(value):
        raise InvalidArgument(
            f"{field} {quoted(value)} must be 1-{MAX_CLIENT_TOKEN_CHARS} visible ASCII characters (letters, digits, "
            "punctuation; no spaces), for example a UUID; leave it empty to make every call create",
            field=field,
        )
    return value


@dataclass(frozen=True)
class UploadRequest:
    """An upload that names itself: whose, which operation, its id, and the fingerprint of what it sent."""

    tenant_id: str
    operation: UploadOperation
    request_id: str
    fingerprint: str


@dataclass(frozen=True)
class RecordedUpload:
    """What an earlier upload with the id created."""

    resource_id: str
    fingerprint: str
    created_at: datetime


class RequestIdTaken(Exception):
    """Another upload recorded the same (tenant, operation, request id) first: its result is the answer (a
    signal between the repository and the domain, never shown to a client)."""


def _fingerprint(metadata: dict[str, Any], data: bytes) -> str:
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True, ensure_ascii=True).encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


async def upload_request(
    tenant_id: str, operation: UploadOperation, request_id: str, metadata: dict[str, Any], data: bytes
) -> UploadRequest | None:
    """The request to record, or None without a request id. ``metadata`` holds every field that shapes the
    result (JSON values), so that a retry differing in any of them is refused rather than answered."""
    if not request_id:
        return None
    if len(data) >= _HASH_IN_THREAD_BYTES:
        fingerprint = await asyncio.to_thread(_fingerprint, metadata, data)
    else:
        fingerprint = _fingerprint(metadata, data)
    return UploadRequest(tenant_id, operation, request_id, fingerprint)


def earlier_resource(request: UploadRequest, recorded: RecordedUpload | None) -> str | None:
    """The id of what an earlier upload with this request id created, None if there was none; FAILED_PRECONDITION
    when that upload sent something else."""
    if recorded is None:
        return None
    if recorded.fingerprint != request.fingerprint:
        raise FailedPrecondition(
            f"request_id {request.request_id!r} was already used for a different {request.operation.value} "
            f"(other metadata or other bytes) at {recorded.created_at.isoformat(timespec='seconds')}; a retry must "
            "send exactly the same request, and a new upload needs a new request id"
        )
    return recorded.resource_id


def created_then_deleted(request: UploadRequest, kind: str, resource_id: str) -> FailedPrecondition:
    """The answer to a retry whose first attempt's resource is gone by now."""
    return FailedPrecondition(
        f"request_id {request.request_id!r} already created {kind} {resource_id!r}, which has since been "
        f"deleted; send a new request id to create it again"
    )


class RecordedUploads(Protocol):
    """The repository of recorded request ids, as the lookup below needs it."""

    async def find(
        self, tenant_id: str, operation: UploadOperation, request_id: str
    ) -> RecordedUpload | None: ...


async def earlier_result(
    recorded_uploads: RecordedUploads,
    request: UploadRequest,
    kind: str,
    get: Callable[[str, str], Awaitable[T]],
) -> T | None:
    """What an earlier upload with this request id created (``get(tenant, id)`` reads it; ``kind`` names it in
    messages), None if there was none; FAILED_PRECONDITION when that upload sent something else, or when what it
    created has been deleted since."""
    recorded = await recorded_uploads.find(request.tenant_id, request.operation, request.request_id)
    resource_id = earlier_resource(request, recorded)
    if resource_id is None:
        return None
    try:
        return await get(request.tenant_id, resource_id)
    except NotFound:
        raise created_then_deleted(request, kind, resource_id) from None
