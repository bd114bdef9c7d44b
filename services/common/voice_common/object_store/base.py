"""The object-store interface shared by every service.

Keys are built by the services from ids (``tenants/<tenant>/samples/<uuid>/original``), never from user strings;
``validate_key`` enforces the alphabet so an adapter can map keys to paths or URLs without escaping tricks.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class ObjectStoreError(Exception):
    """The store failed (I/O, network, server error). Not a client error."""


class ObjectNotFound(ObjectStoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


def validate_key(key: str) -> str:
    if len(key) > 512 or not _KEY_PATTERN.match(key) or ".." in key:
        raise ValueError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


@dataclass(frozen=True)
class ListedObject:
    """A key with the time of its last write or :meth:`ObjectStore.touch` (timezone-aware, UTC)."""

    key: str
    modified: datetime


class ObjectStore(ABC):
    """Async interface; adapters run blocking I/O in worker threads so the event loop never waits on it."""

    @abstractmethod
    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the whole object atomically: readers see the old object, no object, or the new one whole."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The whole object; raises ObjectNotFound."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        """Stream the object in chunks of at most chunk_size bytes; raises ObjectNotFound before the first."""

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size and content type; raises ObjectNotFound."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error (deletes are retried)."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        """Every key starting with prefix, in no particular order."""

    @abstractmethod
    def list_objects(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        """Every key starting with prefix with its last-modified time, in no particular order (expiry sweeps)."""

    @abstractmethod
    def list_folders(self, prefix: str = "") -> AsyncIterator[str]:
        """The distinct next key segments below ``prefix`` (``""`` or ending in ``/``) that hold more segments:
        for keys ``a/x/1`` and ``a/y/2/3``, ``list_folders("a/")`` gives ``x`` and ``y``. One level, without
        listing every key below it (a sweep finds the tenants this way)."""

    @abstractmethod
    async def touch(self, key: str) -> None:
        """Set the object's last-modified time to now, bytes and content type unchanged; raises ObjectNotFound.

        Marks an object as still in use for sweeps that delete by age (see :meth:`list_objects`)."""

    async def remove_abandoned_writes(self, older_than: timedelta) -> int:
        """Remove what writes that never finished left behind (a process killed in the middle of one), if
        they are older than ``older_than``; returns how many were removed. Never touches an object.

        The default removes nothing: an S3 put of up to ``voice_common.object_store.s3.PART_SIZE`` is one request
        that lands whole or not at all, and the services write nothing larger (a bucket's
        AbortIncompleteMultipartUpload lifecycle rule covers anything else)."""
        return 0

    @abstractmethod
    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A URL that downloads the object without credentials until it expires."""

    @abstractmethod
    async def check(self) -> None:
        """Raise ObjectStoreError unless the store answers now (used by health checks)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing to release
        """Release connections and threads."""
