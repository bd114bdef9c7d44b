"""Object store on S3 / MinIO through the ``minio`` SDK.

The SDK is blocking, so every call runs in this store's own thread pool (as many threads as HTTP connections):
concurrent uploads don't queue behind the event loop's small default executor, and the loop never waits on the
network. ``close()`` shuts the pool and the connections down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from urllib3.util import Retry, Timeout

from voice_common.object_store.base import (
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    validate_key,
)

T = TypeVar("T")

_DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Objects up to this size go in one PUT (a 30-60 MB recording is one request, no multipart bookkeeping);
# larger ones are uploaded in parts of this size.
PART_SIZE = 64 * 1024 * 1024
_LIST_BATCH = 1000
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
# Failures of the transport rather than of S3: refused or reset connections, timeouts, broken responses.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (MinioException, urllib3.exceptions.HTTPError, OSError)


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """``"http://host:9000"`` / ``"https://host"`` / ``"host:9000"`` -> (``"host:port"``, secure)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"S3 endpoint must look like http://host:port or https://host, got {endpoint!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"S3 endpoint must not have a path or query, got {endpoint!r}")
    return parts.netloc, parts.scheme == "https"


class S3ObjectStore(ObjectStore):
    """One bucket of an S3-compatible server.

    ``max_connections`` bounds both the HTTP connection pool and the worker threads. Connection failures
    are retried twice with a short backoff, so a refused connection fails in well under a second and an
    unreachable host within about ``3 * connect_timeout`` seconds.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        *,
        max_connections: int = 32,
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
    ) -> None:
        host, secure = parse_endpoint(endpoint)
        check_bucket_name(bucket, strict=True)
        self._endpoint = endpoint
        self._bucket = bucket
        self._region = region
        self._http = urllib3.PoolManager(
            num_pools=4,
            maxsize=max_connections,
            timeout=Timeout(connect=connect_timeout, read=read_timeout),
            retries=Retry(
                total=4,
                connect=2,
                read=1,
                status=2,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
                # Hand the last 5xx response to minio (not MaxRetryError), so it reports S3's own error.
                raise_on_status=False,
            ),
        )
        self._client = Minio(
            host,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,  # known region: minio never asks the server for the bucket location
            http_client=self._http,
        )
        self._executor = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="s3-store")
        self._closed = False

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def __repr__(self) -> str:
        return f"S3ObjectStore(endpoint={self._endpoint!r}, bucket={self._bucket!r})"

    # -- plumbing ----------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"S3 endpoint {self._endpoint} bucket {self._bucket!r}"

    def _translate(self, action: str, key: str | None, exc: BaseException) -> ObjectStoreError:
        if key is not None and isinstance(exc, S3Error) and exc.code in _NOT_FOUND_CODES:
            return ObjectNotFound(key)
        what = f"{action} {key!r}" if key is not None else action
        detail = f"{exc.code}: {exc.message}" if isinstance(exc, S3Error) else f"{type(exc).__name__}: {exc}"
        return ObjectStoreError(f"{what} failed at {self._where()}: {detail}")

    async def _call(
        self, action: str, key: str | None, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Run a blocking SDK call in the store's threads, turning its failures into ObjectStoreError."""
        if self._closed:
            raise ObjectStoreError(f"{action} on a closed store ({self._where()})")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))
        except _TRANSPORT_ERRORS as exc:
            raise self._translate(action, key, exc) from exc

    # -- bucket ------------------------------------------------------------------------------------

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (several services may race to do it at startup)."""
        if await self._call("bucket_exists", None, self._client.bucket_exists, self._bucket):
            return
        try:
            await self._call("make_bucket", None, self._client.make_bucket, self._bucket)
        except ObjectStoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                await self.check()  # someone else created it first; make sure we can use it
                return
            raise

    async def check(self) -> None:
        if not await self._call("bucket_exists", None, self._client.bucket_exists, self._bucket):
            raise ObjectStoreError(f"bucket {self._bucket!r} does not exist at S3 endpoint {self._endpoint}")

    # -- objects -----------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str = _DEFAULT_CONTENT_TYPE) -> None:
        validate_key(key)
        await self._call(
            "put",
            key,
            self._client.put_object,
            self._bucket,
            key,
            io.BytesIO(data),
            length=len(data),
            content_type=content_type or _DEFAULT_CONTENT_TYPE,
            part_size=PART_SIZE,
        )

    async def get(self, key: str) -> bytes:
        validate_key(key)
        return await self._call("get", key, self._get_sync, key)

    def _get_sync(self, key: str) -> bytes:
        response = self._client.get_object(self._bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def iter_chunks(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        validate_key(key)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        response = await self._call("get", key, self._client.get_object, self._bucket, key)
        try:
            stream: Iterator[bytes] = response.stream(chunk_size)
            while True:
                chunk = await self._call("read", key, next, stream, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            # Also runs when the consumer stops early (aclose, break + garbage collection, cancellation):
            # close the half-read response (its connection must not be reused mid-body), then release it.
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        info = await self._call("stat", key, self._client.stat_object, self._bucket, key)
        return ObjectInfo(
            key=key,
            size=int(info.size or 0),
            content_type=info.content_type or _DEFAULT_CONTENT_TYPE,
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        # S3 answers 204 for a missing key anyway; some compatible servers say NoSuchKey.
        with contextlib.suppress(ObjectNotFound):
            await self._call("delete", key, self._client.remove_object, self._bucket, key)

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        async for obj in self._listing(prefix, recursive=True):
            if obj.object_name:
                yield obj.object_name

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        async for obj in self._listing(prefix, recursive=True):
            if obj.object_name:
                modified = obj.last_modified or datetime.fromtimestamp(0, UTC)
                yield ListedObject(obj.object_name, modified.astimezone(UTC))

    async def list_folders(self, prefix: str = "") -> AsyncIterator[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/', got {prefix!r}")
        # Not recursive: S3 answers the common prefixes one level down ("a/x/"), not the keys below them.
        async for obj in self._listing(prefix, recursive=False):
            if obj.is_dir and obj.object_name:
                yield obj.object_name[len(prefix) :].rstrip("/")

    async def _listing(self, prefix: str, *, recursive: bool) -> AsyncIterator[Any]:
        objects = self._client.list_objects(self._bucket, prefix=prefix or None, recursive=recursive)
        while True:
            # The SDK pages lazily with blocking requests: pull a batch at a time in a worker thread.
            batch = await self._call(f"list prefix {prefix!r}", None, _take, objects, _LIST_BATCH)
            for obj in batch:
                yield obj
            if len(batch) < _LIST_BATCH:
                return

    async def touch(self, key: str) -> None:
        validate_key(key)
        await self._call("touch", key, self._touch_sync, key)

    def _touch_sync(self, key: str) -> None:
        # S3 has no "touch": copying the object onto itself with replaced metadata gives it a new last-modified
        # time, server-side (no bytes travel). REPLACE drops the stored metadata, so the content type is re-sent.
        info = self._client.stat_object(self._bucket, key)
        self._client.copy_object(
            self._bucket,
            key,
            CopySource(self._bucket, key),
            metadata={"Content-Type": info.content_type or _DEFAULT_CONTENT_TYPE},
            metadata_directive=REPLACE,
        )

    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        validate_key(key)
        return await self._call(
            "presign", key, self._client.get_presigned_url, "GET", self._bucket, key, expires=expires
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._http.clear()


def _take(objects: Iterator[Any], count: int) -> list[Any]:
    return list(itertools.islice(objects, count))
