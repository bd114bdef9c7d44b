"""What every domain manager works with: the database, the object store, the cleanup rules, limits and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from voice_common.object_store import ObjectStore
from voice_profiles.domain.database_ports import Database
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.object_cleanup import ObjectCleanup
from voice_profiles.domain.profile_cache import ProfileCache


@dataclass(frozen=True)
class Storage:
    database: Database
    store: ObjectStore
    cleanup: ObjectCleanup
    limits: Limits
    clock: Callable[[], datetime]
    profile_cache: ProfileCache


class StorageUser:
    """Base of the managers: one constructor, so wiring them (and swapping a part in tests) is one place."""

    def __init__(self, storage: Storage) -> None:
        self._database = storage.database
        self._store = storage.store
        self._cleanup = storage.cleanup
        self._limits = storage.limits
        self._clock = storage.clock
        self._profile_cache = storage.profile_cache
