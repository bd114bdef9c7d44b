"""An ObjectStore wrapper that fails on purpose, to test what callers do when storage breaks mid-operation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from voice_common.object_store.base import ListedObject, ObjectInfo, ObjectStore, ObjectStoreError


class FaultyObjectStore(ObjectStore):
    """Delegates to ``inner``, except that chosen calls raise ObjectStoreError("injected failure ...").

    * ``fail_put_on_call=N``: the N-th call of ``put`` (1-based) fails, the others go through;
    * ``fail_put_key_contains=s``: every ``put`` of a key containing ``s`` fails;
    * ``fail_delete=True``: every ``delete`` fails; set the attribute to False to let deletes through again.

    A failed put stores nothing. ``put_calls`` / ``delete_calls`` count every call, failed ones included;
    ``failed_puts`` / ``failed_deletes`` list the keys of the injected failures. The attributes can be changed
    at any time.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        fail_put_on_call: int | None = None,
        fail_put_key_contains: str | None = None,
        fail_delete: bool = False,
    ) -> None:
        self.inner = inner
        self.fail_put_on_call = fail_put_on_call
        self.fail_put_key_contains = fail_put_key_contains
        self.fail_delete = fail_delete
        self.put_calls = 0
        self.delete_calls = 0
        self.failed_puts: list[str] = []
        self.failed_deletes: list[str] = []

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.put_calls += 1
        if self.fail_put_on_call is not None and self.put_calls == self.fail_put_on_call:
            self.failed_puts.append(key)
            raise ObjectStoreError(f"injected failure on put call {self.put_calls} ({key!r})")
        if self.fail_put_key_contains is not None and self.fail_put_key_contains in key:
            self.failed_puts.append(key)
            raise ObjectStoreError(
                f"injected failure on put of {key!r} (contains {self.fail_put_key_contains!r})"
            )
        await self.inner.put(key, data, content_type)

    async def delete(self, key: str) -> None:
        self.delete_calls += 1
        if self.fail_delete:
            self.failed_deletes.append(key)
            raise ObjectStoreError(f"injected failure on delete of {key!r}")
        await self.inner.delete(key)

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    def iter_chunks(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        return self.inner.iter_chunks(key, chunk_size)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        return self.inner.list_keys(prefix)

    def list_objects(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        return self.inner.list_objects(prefix)

    def list_folders(self, prefix: str = "") -> AsyncIterator[str]:
        return self.inner.list_folders(prefix)

    async def touch(self, key: str) -> None:
        await self.inner.touch(key)

    async def remove_abandoned_writes(self, older_than: timedelta) -> int:
        return await self.inner.remove_abandoned_writes(older_than)

    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        return await self.inner.presigned_get_url(key, expires)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()
