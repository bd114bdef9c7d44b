"""Shared fixtures of the voice_common tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voice_common.object_store import FilesystemObjectStore, ObjectStore, S3ObjectStore
from voice_testing.s3_server import MotoServer, unique_bucket_name

# -- object stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["filesystem", "s3"])
async def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store per test: a directory under tmp_path, or a new bucket on the moto server."""
    store: ObjectStore
    if request.param == "filesystem":
        store = FilesystemObjectStore(tmp_path / "objects")
        yield store
        await store.close()
        return
    moto_server: MotoServer = request.getfixturevalue("moto_server")
    s3_store = S3ObjectStore(
        moto_server.endpoint, moto_server.access_key, moto_server.secret_key, unique_bucket_name()
    )
    await s3_store.ensure_bucket()
    yield s3_store
    try:  # free the server's memory; the bucket itself is left (moto keeps empty buckets cheaply)
        for key in [key async for key in s3_store.list_keys()]:
            await s3_store.delete(key)
    finally:
        await s3_store.close()
