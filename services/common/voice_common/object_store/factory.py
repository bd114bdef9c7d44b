"""Build the object store the settings ask for."""

from __future__ import annotations

import asyncio

from voice_common.config import CommonSettings
from voice_common.object_store.base import ObjectStore
from voice_common.object_store.filesystem import FilesystemObjectStore
from voice_common.object_store.s3 import S3ObjectStore


async def create_object_store(settings: CommonSettings) -> ObjectStore:
    """S3/MinIO when ``VOICE_S3_ENDPOINT`` is set (the bucket is created if missing), else the directory
    ``<data_dir>/objects`` (created if missing).

    Raises ObjectStoreError when the store can't be reached or prepared.
    The caller owns the store and closes it.
    """
    if settings.s3_endpoint:
        store = S3ObjectStore(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            settings.s3_region,
        )
        try:
            await store.ensure_bucket()
        except BaseException:
            await store.close()
            raise
        return store
    root = settings.objects_dir
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    return FilesystemObjectStore(root)
