"""Object store on a local directory (embedded mode).

Layout: the object ``a/b/c`` is the file ``<root>/a/b/c``; its content type is kept in the sidecar file
``<root>/a/b/.c.content-type``. Keys never contain a segment starting with ``.`` (``validate_key``), so the
sidecars and the temporary files of writes in progress (``.tmp-<random>-<name>``) can't collide with a key and
are never listed.

Writes go to a temporary file in the object's directory, are flushed to disk, then renamed over the object
(``os.replace``): a reader sees the old object, no object, or the new one whole, never a half file. The
sidecar is replaced just before the data, so two concurrent writes of the same key with *different* content
types may leave, for a moment, the new type beside the old bytes; the services never do that (keys are ids).

Limit of mapping keys to paths: ``a/b`` and ``a/b/c`` can't both be objects (``a/b`` would have to be a file
and a directory); writing the second raises ObjectStoreError. The services' keys never nest that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from voice_common.object_store.base import (
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    validate_key,
)

_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SIDECAR_SUFFIX = ".content-type"
_TMP_PREFIX = ".tmp-"
# A write's directory can be removed by a concurrent delete of the directory's last object between our mkdir
# and the creation of the temporary file; we then create it again, a bounded number of times.
_MKDIR_ATTEMPTS = 5


class FilesystemObjectStore(ObjectStore):
    """Objects as files under ``root``; every blocking call runs in a worker thread."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).absolute()

    @property
    def root(self) -> Path:
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemObjectStore({str(self._root)!r})"

    # -- paths -------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}{_SIDECAR_SUFFIX}")

    def _error(self, action: str, key: str, exc: OSError) -> ObjectStoreError:
        return ObjectStoreError(f"filesystem store {str(self._root)!r}: {action} {key!r} failed: {exc}")

    # -- writes ------------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str = _DEFAULT_CONTENT_TYPE) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._put_sync, path, data, content_type or _DEFAULT_CONTENT_TYPE)
        except OSError as exc:
            raise self._error("put", key, exc) from exc

    def _put_sync(self, path: Path, data: bytes, content_type: str) -> None:
        sidecar = self._sidecar(path)
        tmp_data = self._write_temp(path, data)
        leftovers = [tmp_data]  # unlinked at the end unless renamed into place
        try:
            tmp_type = self._write_temp(sidecar, content_type.encode("utf-8"))
            leftovers.append(tmp_type)
            os.replace(tmp_type, sidecar)
            leftovers.remove(tmp_type)
            os.replace(tmp_data, path)
            leftovers.remove(tmp_data)
            _fsync_dir(path.parent)
        finally:
            for leftover in leftovers:
                _unlink_quietly(leftover)

    def _write_temp(self, target: Path, data: bytes) -> Path:
        """Write data to a new temporary file beside target, flushed to disk; returns its path."""
        for attempt in range(_MKDIR_ATTEMPTS):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{_TMP_PREFIX}{secrets.token_hex(8)}-{target.name}")
            try:
                handle: BinaryIO = open(tmp, "xb")  # noqa: SIM115 - closed below, unlinked on failure
            except FileNotFoundError:
                if attempt == _MKDIR_ATTEMPTS - 1:
                    raise
                continue  # the directory vanished under us (concurrent delete); make it again
            try:
                with handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except BaseException:
                _unlink_quietly(tmp)
                raise
            return tmp
        raise AssertionError("unreachable")

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._delete_sync, path)
        except OSError as exc:
            raise self._error("delete", key, exc) from exc

    def _delete_sync(self, path: Path) -> None:
        for victim in (path, self._sidecar(path)):
            try:
                victim.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass  # deleting a missing object is fine
            except IsADirectoryError:
                pass  # a "directory" of other keys, not an object: nothing to delete
            except PermissionError:
                if victim.is_dir():  # macOS reports unlink() on a directory as EPERM
                    continue
                raise
        self._remove_empty_parents(path)

    def _remove_empty_parents(self, path: Path) -> None:
        """Remove the now-empty parent directories of ``path``, up to (not including) the root. rmdir refuses a
        directory that still holds anything (another object, a write in progress): exactly the stop condition."""
        parent = path.parent
        while parent != self._root and self._root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def remove_abandoned_writes(self, older_than: timedelta) -> int:
        """Delete the temporary files of writes that were never renamed into place (a process killed mid-write)
        and were last written more than ``older_than`` ago: a write in progress keeps its file fresh."""
        try:
            return await asyncio.to_thread(self._remove_abandoned_sync, older_than)
        except OSError as exc:
            raise self._error("sweep", "", exc) from exc

    def _remove_abandoned_sync(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC).timestamp() - older_than.total_seconds()
        removed = 0
        for directory, _folders, files in os.walk(self._root):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    continue
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                        self._remove_empty_parents(path)
        return removed

    # -- reads -------------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise self._error("get", key, exc) from exc

    async def iter_chunks(self, key: str, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(_open_object, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise self._error("open", key, exc) from exc
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, chunk_size)
                except OSError as exc:
                    raise self._error("read", key, exc) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            # Closing a file opened for reading doesn't block; inline, it is safe under cancellation too.
            handle.close()

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            size, content_type = await asyncio.to_thread(self._stat_sync, path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise self._error("stat", key, exc) from exc
        return ObjectInfo(key=key, size=size, content_type=content_type)

    def _stat_sync(self, path: Path) -> tuple[int, str]:
        info = path.stat()
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "not an object", str(path))
        try:
            content_type = self._sidecar(path).read_text(encoding="utf-8") or _DEFAULT_CONTENT_TYPE
        except FileNotFoundError:
            content_type = _DEFAULT_CONTENT_TYPE  # written by something else than put(): bytes, no type
        return info.st_size, content_type

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        try:
            keys = await asyncio.to_thread(self._list_sync, prefix)
        except OSError as exc:
            raise self._error("list", prefix, exc) from exc
        for key in keys:
            yield key

    def _list_sync(self, prefix: str) -> list[str]:
        return [key for key, _ in self._walk(prefix)]

    def _walk(self, prefix: str) -> Iterator[tuple[str, Path]]:
        """(key, path) of every object whose key starts with prefix."""
        # Start the walk at the deepest directory the prefix names whole ("a/b/c" -> "a/b"), when that part is
        # a valid key; otherwise walk everything and filter (the filter alone is what decides).
        start = self._root
        directory, _, _ = prefix.rpartition("/")
        if directory:
            try:
                start = self._root / validate_key(directory)
            except ValueError:
                start = self._root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            base = Path(dirpath).relative_to(self._root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue  # sidecars, temporary files, health-check probes
                key = name if base == "." else f"{base}/{name}"
                if key.startswith(prefix):
                    yield key, Path(dirpath) / name

    async def list_objects(self, prefix: str = "") -> AsyncIterator[ListedObject]:
        try:
            listed = await asyncio.to_thread(self._list_objects_sync, prefix)
        except OSError as exc:
            raise self._error("list", prefix, exc) from exc
        for item in listed:
            yield item

    def _list_objects_sync(self, prefix: str) -> list[ListedObject]:
        listed: list[ListedObject] = []
        for key, path in self._walk(prefix):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted since the walk saw it
            listed.append(ListedObject(key, datetime.fromtimestamp(modified, UTC)))
        return listed

    async def list_folders(self, prefix: str = "") -> AsyncIterator[str]:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"a folder prefix ends with '/', got {prefix!r}")
        directory = self._root / validate_key(prefix[:-1]) if prefix else self._root
        try:
            names = await asyncio.to_thread(_subdirectories, directory)
        except OSError as exc:
            raise self._error("list folders of", prefix, exc) from exc
        for name in names:
            yield name

    async def touch(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(_touch_file, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        except OSError as exc:
            raise self._error("touch", key, exc) from exc

    async def presigned_get_url(self, key: str, expires: timedelta) -> str:
        """A ``file://`` URI of the object's path.

        Nothing is signed and ``expires`` is ignored: on a local disk the reader is this host, with its own
        file permissions. Like the S3 adapter, it doesn't check that the object exists.
        """
        return self._path(key).as_uri()

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self._check_sync)
        except OSError as exc:
            raise ObjectStoreError(f"filesystem store {str(self._root)!r} is not usable: {exc}") from exc

    def _check_sync(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)
        probe = self._root / f".check-{secrets.token_hex(8)}"
        try:
            with open(probe, "xb") as handle:
                handle.write(b"ok")
        finally:
            _unlink_quietly(probe)


def _open_object(path: Path) -> BinaryIO:
    handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - the caller closes it
    return handle


def _subdirectories(directory: Path) -> list[str]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        entry.name
        for entry in entries
        if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
    ]


def _touch_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "not an object", str(path))
    os.utime(path)  # now; the bytes and the content-type sidecar are untouched


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; not every platform can open a directory, so this is best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
