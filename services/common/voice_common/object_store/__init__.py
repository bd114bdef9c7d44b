"""Object storage for audio: a local directory (embedded mode) or an S3/MinIO bucket (cluster mode)."""

from voice_common.object_store.base import (
    ListedObject,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    validate_key,
)
from voice_common.object_store.factory import create_object_store
from voice_common.object_store.filesystem import FilesystemObjectStore
from voice_common.object_store.s3 import S3ObjectStore

__all__ = [
    "FilesystemObjectStore",
    "ListedObject",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "create_object_store",
    "validate_key",
]
