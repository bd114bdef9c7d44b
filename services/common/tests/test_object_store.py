"""Both object-store adapters against the same contract; S3 runs against a real moto server over HTTP."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
import urllib.request
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from voice_common.config import CommonSettings
from voice_common.object_store import (
    FilesystemObjectStore,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    S3ObjectStore,
    create_object_store,
)
from voice_testing.faulty_store import FaultyObjectStore
from voice_testing.s3_server import MotoServer, unique_bucket_name

MB = 1024 * 1024
INVALID_KEYS = ["../x", "/abs", "a//b", "", "has space", "a/../b", "a/", ".hidden", "a/.b", "x" * 600]


async def all_keys(store: ObjectStore, prefix: str = "") -> set[str]:
    return {key async for key in store.list_keys(prefix)}


async def read_chunks(store: ObjectStore, key: str, chunk_size: int) -> list[bytes]:
    return [chunk async for chunk in store.iter_chunks(key, chunk_size)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


# -- the contract, on both adapters ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 5 * MB], ids=["empty", "1B", "small", "5MB"])
async def test_put_get_roundtrip(object_store: ObjectStore, size: int) -> None:
    data = os.urandom(size)
    await object_store.put("tenants/t1/samples/abc/original", data, "audio/wav")
    assert await object_store.get("tenants/t1/samples/abc/original") == data
    assert await object_store.stat("tenants/t1/samples/abc/original") == ObjectInfo(
        key="tenants/t1/samples/abc/original", size=size, content_type="audio/wav"
    )


async def test_overwrite_replaces_bytes_and_content_type(object_store: ObjectStore) -> None:
    await object_store.put("k/v", b"first version", "audio/wav")
    await object_store.put("k/v", b"2nd", "audio/flac")
    assert await object_store.get("k/v") == b"2nd"
    assert await object_store.stat("k/v") == ObjectInfo("k/v", 3, "audio/flac")
    assert await all_keys(object_store) == {"k/v"}


async def test_default_content_type(object_store: ObjectStore) -> None:
    await object_store.put("plain", b"xyz")
    info = await object_store.stat("plain")
    assert (info.size, info.content_type) == (3, "application/octet-stream")


async def test_readers_see_a_whole_version_during_overwrites(object_store: ObjectStore) -> None:
    versions = [bytes([65 + i]) * (200_000 + i * 1000) for i in range(4)]
    await object_store.put("race", versions[0])

    async def writer() -> None:
        for i in range(12):
            await object_store.put("race", versions[i % len(versions)])

    async def reader() -> list[bytes]:
        return [await object_store.get("race") for _ in range(12)]

    _, *reads = await asyncio.gather(writer(), reader(), reader())
    for seen in (data for batch in reads for data in batch):
        assert seen in versions


async def test_iter_chunks(object_store: ObjectStore) -> None:
    data = os.urandom(1 * MB + 123)
    await object_store.put("stream/me", data)
    chunk_size = 64 * 1024
    chunks = await read_chunks(object_store, "stream/me", chunk_size)
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    assert len(chunks) >= -(-len(data) // chunk_size)
    small = await read_chunks(object_store, "stream/me", 1000)
    assert b"".join(small) == data and max(map(len, small)) <= 1000


async def test_iter_chunks_of_empty_object(object_store: ObjectStore) -> None:
    await object_store.put("empty", b"")
    assert await read_chunks(object_store, "empty", 1024) == []


async def test_iter_chunks_early_stop_releases_resources(object_store: ObjectStore) -> None:
    data = os.urandom(2 * MB)
    await object_store.put("long", data)
    for _ in range(10):  # the consumer closes the generator
        # The interface types iter_chunks as an AsyncIterator; both adapters return async generators.
        chunks = cast(AsyncGenerator[bytes, None], object_store.iter_chunks("long", 16 * 1024))
        async with aclosing(chunks):
            async for chunk in chunks:
                assert chunk == data[: len(chunk)]
                break
    for _ in range(10):  # the consumer just walks away; the generator is finalized by the loop
        async for _chunk in object_store.iter_chunks("long", 16 * 1024):
            break
    gc.collect()
    await asyncio.sleep(0.05)
    # The store still works, many times over.
    for i in range(25):
        await object_store.put(f"after/{i}", bytes([i]) * 100)
        assert await object_store.get(f"after/{i}") == bytes([i]) * 100
    assert len(await all_keys(object_store, "after/")) == 25
    assert b"".join(await read_chunks(object_store, "long", 256 * 1024)) == data


async def test_missing_object(object_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        await object_store.get("no/such/key")
    assert info.value.key == "no/such/key"
    with pytest.raises(ObjectNotFound):
        await object_store.stat("no/such/key")
    with pytest.raises(ObjectNotFound):
        await read_chunks(object_store, "no/such/key", 1024)
    # A "directory" of other keys is not an object either.
    await object_store.put("no/such/key/below", b"x")
    with pytest.raises(ObjectNotFound):
        await object_store.get("no/such/key")
    with pytest.raises(ObjectNotFound):
        await object_store.stat("no/such")


async def test_delete_is_idempotent(object_store: ObjectStore) -> None:
    await object_store.delete("never/existed")
    await object_store.put("del/me", b"bytes")
    await object_store.put("del/keep", b"bytes")
    await object_store.delete("del/me")
    await object_store.delete("del/me")
    with pytest.raises(ObjectNotFound):
        await object_store.get("del/me")
    assert await all_keys(object_store) == {"del/keep"}


async def test_list_keys_with_prefix(object_store: ObjectStore) -> None:
    keys = {"t/a/1", "t/a/2", "t/ab/1", "t/b/1", "u/1", "top"}
    await asyncio.gather(*(object_store.put(key, key.encode()) for key in keys))
    assert await all_keys(object_store) == keys
    assert await all_keys(object_store, "t/a/") == {"t/a/1", "t/a/2"}
    assert await all_keys(object_store, "t/a") == {"t/a/1", "t/a/2", "t/ab/1"}
    assert await all_keys(object_store, "t/") == {"t/a/1", "t/a/2", "t/ab/1", "t/b/1"}
    assert await all_keys(object_store, "to") == {"top"}
    assert await all_keys(object_store, "t/a/1") == {"t/a/1"}
    assert await all_keys(object_store, "nothing/") == set()
    assert await all_keys(object_store, "../") == set()


async def listed(store: ObjectStore, prefix: str = "") -> dict[str, datetime]:
    return {item.key: item.modified async for item in store.list_objects(prefix)}


async def test_list_objects_gives_keys_with_their_last_modified_time(object_store: ObjectStore) -> None:
    keys = {"t/a/1", "t/a/2", "t/ab/1", "u/1"}
    before = datetime.now(UTC)
    await asyncio.gather(*(object_store.put(key, key.encode()) for key in keys))
    after = datetime.now(UTC)
    times = await listed(object_store)
    assert set(times) == keys
    assert set(await listed(object_store, "t/a/")) == {"t/a/1", "t/a/2"}
    assert set(await listed(object_store, "t/a")) == {"t/a/1", "t/a/2", "t/ab/1"}
    assert await listed(object_store, "nothing/") == {}
    # Timezone-aware UTC (S3 keeps whole seconds): a sweep compares them with its own clock.
    slack = timedelta(seconds=2)
    assert all(before - slack <= modified <= after + slack for modified in times.values()), times


async def test_touch_renews_the_last_modified_time_and_keeps_the_object(object_store: ObjectStore) -> None:
    await object_store.put("p/old", b"prompt bytes", "application/x-prompt")
    await object_store.put("p/other", b"other")
    first = await listed(object_store, "p/")
    await asyncio.sleep(1.1)  # S3 keeps last-modified times in whole seconds
    await object_store.touch("p/old")
    second = await listed(object_store, "p/")
    assert second["p/old"] > first["p/old"]
    assert second["p/other"] == first["p/other"]
    assert await object_store.get("p/old") == b"prompt bytes"
    assert await object_store.stat("p/old") == ObjectInfo("p/old", 12, "application/x-prompt")
    with pytest.raises(ObjectNotFound):
        await object_store.touch("p/missing")
    with pytest.raises(ObjectNotFound):
        await object_store.touch("p")  # a folder, not an object
    with pytest.raises(ValueError):
        await object_store.touch("../x")
    assert await all_keys(object_store) == {"p/old", "p/other"}


async def test_list_folders_gives_one_level_below_a_prefix(object_store: ObjectStore) -> None:
    keys = ["tenants/a/samples/1/original", "tenants/a/prompts/x", "tenants/b/prompts/y", "tenants/top", "z"]
    await asyncio.gather(*(object_store.put(key, b"x") for key in keys))

    async def folders(prefix: str) -> list[str]:
        return sorted([name async for name in object_store.list_folders(prefix)])

    assert await folders("") == ["tenants"]
    assert await folders("tenants/") == ["a", "b"]
    assert await folders("tenants/a/") == ["prompts", "samples"]
    assert await folders("tenants/a/prompts/") == []
    assert await folders("nothing/") == []
    with pytest.raises(ValueError):
        await folders("tenants")


@pytest.mark.parametrize("key", INVALID_KEYS, ids=lambda key: repr(key)[:20])
async def test_invalid_keys_are_rejected(object_store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        await object_store.put(key, b"x")
    with pytest.raises(ValueError):
        await object_store.get(key)
    with pytest.raises(ValueError):
        await object_store.stat(key)
    with pytest.raises(ValueError):
        await object_store.delete(key)
    with pytest.raises(ValueError):
        await read_chunks(object_store, key, 1024)
    with pytest.raises(ValueError):
        await object_store.presigned_get_url(key, timedelta(minutes=1))


async def test_presigned_url_downloads_the_bytes(object_store: ObjectStore) -> None:
    data = os.urandom(300_000)
    await object_store.put("shared/clip", data, "audio/wav")
    url = await object_store.presigned_get_url("shared/clip", timedelta(minutes=5))
    expected_scheme = "file://" if isinstance(object_store, FilesystemObjectStore) else "http://"
    assert url.startswith(expected_scheme)

    def download() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
        return body

    assert await asyncio.to_thread(download) == data


async def test_check_ok(object_store: ObjectStore) -> None:
    await object_store.check()


async def test_concurrent_puts_then_gets(object_store: ObjectStore) -> None:
    payloads = {f"many/{i:02d}": os.urandom(100_000 + i) for i in range(20)}
    await asyncio.gather(*(object_store.put(key, data) for key, data in payloads.items()))
    results = await asyncio.gather(*(object_store.get(key) for key in payloads))
    assert dict(zip(payloads, results, strict=True)) == payloads
    assert await all_keys(object_store, "many/") == set(payloads)


# -- FaultyObjectStore -----------------------------------------------------------------------------


async def test_faulty_store_fails_the_nth_put(object_store: ObjectStore) -> None:
    faulty = FaultyObjectStore(object_store, fail_put_on_call=2)
    await faulty.put("f/1", b"one")
    with pytest.raises(ObjectStoreError, match="injected failure"):
        await faulty.put("f/2", b"two")
    await faulty.put("f/3", b"three")
    assert faulty.put_calls == 3 and faulty.failed_puts == ["f/2"]
    assert await all_keys(object_store) == {"f/1", "f/3"}
    with pytest.raises(ObjectNotFound):
        await faulty.get("f/2")
    # Everything else is delegated.
    assert await faulty.get("f/1") == b"one"
    assert (await faulty.stat("f/3")).size == 5
    assert b"".join([chunk async for chunk in faulty.iter_chunks("f/3", 2)]) == b"three"
    assert {key async for key in faulty.list_keys("f/")} == {"f/1", "f/3"}
    assert await faulty.presigned_get_url("f/1", timedelta(minutes=1))
    await faulty.check()


async def test_faulty_store_fails_puts_by_key_and_deletes(object_store: ObjectStore) -> None:
    faulty = FaultyObjectStore(object_store, fail_put_key_contains="/converted", fail_delete=True)
    await faulty.put("s/1/original", b"o")
    with pytest.raises(ObjectStoreError, match="injected failure"):
        await faulty.put("s/1/converted", b"c")
    with pytest.raises(ObjectStoreError, match="injected failure"):
        await faulty.delete("s/1/original")
    assert await faulty.get("s/1/original") == b"o"  # the failed delete removed nothing
    faulty.fail_delete = False
    await faulty.delete("s/1/original")
    assert await all_keys(object_store) == set()
    assert (faulty.put_calls, faulty.delete_calls) == (2, 2)
    assert faulty.failed_deletes == ["s/1/original"]


# -- filesystem specifics --------------------------------------------------------------------------


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


async def test_filesystem_layout_and_cleanup(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    await store.put("a/b/c", b"data", "audio/ogg")
    assert (root / "a/b/c").read_bytes() == b"data"
    assert not any(".tmp-" in name for name in files_under(root))
    await store.put("a/keep", b"k")
    await store.delete("a/b/c")
    assert files_under(root) == {"a/keep", "a/.keep.content-type"}
    assert not (root / "a/b").exists()  # emptied parents are removed...
    await store.delete("a/keep")
    assert root.is_dir() and list(root.iterdir()) == []  # ...up to, not including, the root


async def test_filesystem_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = FilesystemObjectStore(root)
    await store.put("clash/inner/object", b"x")
    # "clash/inner" is a directory holding another object: writing an object there must fail at the rename.
    with pytest.raises(ObjectStoreError, match="clash/inner"):
        await store.put("clash/inner", b"y" * 100_000)
    assert not any(".tmp-" in name for name in files_under(root))
    assert await store.get("clash/inner/object") == b"x"
    # A key below an object can't exist either ("clash/inner/object" is a file).
    with pytest.raises(ObjectStoreError):
        await store.put("clash/inner/object/deeper", b"z")
    assert not any(".tmp-" in name for name in files_under(root))
    assert await all_keys(store) == {"clash/inner/object"}


async def test_filesystem_ignores_stray_dot_files(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    await store.put("x/y", b"1")
    (tmp_path / "x" / ".tmp-deadbeef-y").write_bytes(b"half")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "z").write_bytes(b"no")
    assert await all_keys(store) == {"x/y"}


async def test_filesystem_removes_writes_a_killed_process_abandoned(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    await store.put("kept/object", b"whole")
    abandoned = tmp_path / "tenants" / "t" / "samples" / "s" / ".tmp-0123abcd-original"
    abandoned.parent.mkdir(parents=True)
    abandoned.write_bytes(b"half an upload")
    hour_ago = time.time() - 3600
    os.utime(abandoned, (hour_ago, hour_ago))
    in_progress = tmp_path / "kept" / ".tmp-4567cdef-other"
    in_progress.write_bytes(b"being written now")
    assert await store.remove_abandoned_writes(timedelta(minutes=30)) == 1
    assert not abandoned.exists() and not (tmp_path / "tenants").exists()  # with its empty folders
    assert in_progress.exists()  # a write still running keeps its file fresh
    assert await store.get("kept/object") == b"whole"


async def test_filesystem_check(tmp_path: Path) -> None:
    await FilesystemObjectStore(tmp_path / "new" / "dir").check()
    assert (tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []  # the probe is cleaned up
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ObjectStoreError, match="not usable"):
        await FilesystemObjectStore(tmp_path / "file").check()


async def test_filesystem_presigned_url_is_the_file(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path)
    url = await store.presigned_get_url("p/q", timedelta(seconds=1))
    assert url == (tmp_path / "p" / "q").absolute().as_uri()


# -- S3 specifics ----------------------------------------------------------------------------------


def s3_store(server: MotoServer, bucket: str | None = None, endpoint: str | None = None) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint or server.endpoint, server.access_key, server.secret_key, bucket or unique_bucket_name()
    )


async def test_s3_bucket_auto_created(moto_server: MotoServer) -> None:
    store = s3_store(moto_server)
    try:
        with pytest.raises(ObjectStoreError, match="does not exist") as info:
            await store.check()
        assert store.bucket in str(info.value) and moto_server.endpoint in str(info.value)
        await store.ensure_bucket()
        await store.ensure_bucket()  # again: nothing to do
        await store.check()
        await store.put("k", b"v")
        assert await store.get("k") == b"v"
    finally:
        await store.close()


async def test_s3_unreachable_endpoint_fails_fast(moto_server: MotoServer) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = s3_store(moto_server, bucket="voice", endpoint=endpoint)
    try:
        started = time.monotonic()
        with pytest.raises(ObjectStoreError) as info:
            await store.check()
        assert time.monotonic() - started < 10
        assert endpoint in str(info.value) and "'voice'" in str(info.value)
        assert not isinstance(info.value, ObjectNotFound)
        with pytest.raises(ObjectStoreError):
            await store.put("k", b"v")
        with pytest.raises(ObjectStoreError):
            await store.get("k")
    finally:
        await store.close()


async def test_s3_missing_bucket_is_a_store_error_not_a_missing_object(moto_server: MotoServer) -> None:
    store = s3_store(moto_server)
    try:
        with pytest.raises(ObjectStoreError) as info:
            await store.get("k")
        assert not isinstance(info.value, ObjectNotFound)
        with pytest.raises(ObjectStoreError):
            await store.put("k", b"v")
    finally:
        await store.close()


async def test_s3_early_stop_returns_connections(moto_server: MotoServer) -> None:
    store = s3_store(moto_server)
    try:
        await store.ensure_bucket()
        await store.put("long", os.urandom(2 * MB))
        for _ in range(20):
            async for _chunk in store.iter_chunks("long", 8 * 1024):
                break
        gc.collect()
        await asyncio.sleep(0.05)
        for i in range(50):
            if i % 2:
                await store.stat("long")
            else:
                await store.put(f"n/{i}", b"x")
        # A response dropped without release would strand its connection and make the pool open a new one.
        pool = store._http.connection_from_url(moto_server.endpoint)
        assert pool.num_connections <= 3
    finally:
        await store.close()


async def test_s3_closed_store_refuses_calls(moto_server: MotoServer) -> None:
    store = s3_store(moto_server)
    await store.close()
    await store.close()
    with pytest.raises(ObjectStoreError, match="closed"):
        await store.check()


def test_s3_endpoint_forms() -> None:
    for endpoint in ("http://127.0.0.1:9000", "127.0.0.1:9000", "https://minio.example:443", "http://h:1/"):
        S3ObjectStore(endpoint, "a", "b", "voice")
    for endpoint in ("ftp://h:1", "http://h:1/sub/path"):
        with pytest.raises(ValueError):
            S3ObjectStore(endpoint, "a", "b", "voice")
    with pytest.raises(ValueError):
        S3ObjectStore("http://h:1", "a", "b", "Not_A_Bucket")


def test_moto_server_lifecycle_and_reset() -> None:
    import boto3  # only to look at the server from a second, independent client

    with MotoServer() as server:
        client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
        )
        client.create_bucket(Bucket="wiped")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["wiped"]
        server.reset()
        assert client.list_buckets()["Buckets"] == []
        endpoint = server.endpoint
    assert not server.running
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint, timeout=2)


# -- factory ---------------------------------------------------------------------------------------


async def test_factory_filesystem(tmp_path: Path) -> None:
    settings = CommonSettings.model_validate({"data_dir": tmp_path / "data", "s3_endpoint": None})
    store = await create_object_store(settings)
    assert isinstance(store, FilesystemObjectStore)
    assert (tmp_path / "data" / "objects").is_dir()
    await store.put("k", b"v")
    assert (tmp_path / "data" / "objects" / "k").read_bytes() == b"v"
    await store.close()


async def test_factory_s3_creates_the_bucket(moto_server: MotoServer) -> None:
    bucket = unique_bucket_name()
    settings = CommonSettings.model_validate(
        {
            "s3_endpoint": moto_server.endpoint,
            "s3_access_key": moto_server.access_key,
            "s3_secret_key": moto_server.secret_key,
            "s3_bucket": bucket,
        }
    )
    store = await create_object_store(settings)
    try:
        assert isinstance(store, S3ObjectStore) and store.bucket == bucket
        await store.check()
    finally:
        await store.close()


async def test_factory_s3_unreachable_raises(tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{closed_port()}"  # the "host:port" form, without a scheme
    settings = CommonSettings.model_validate({"s3_endpoint": endpoint, "data_dir": tmp_path})
    with pytest.raises(ObjectStoreError):
        await create_object_store(settings)
