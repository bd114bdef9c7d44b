"""Recently read profiles, so GetProfile (the call every TTS request makes) rarely reaches the database.

Consistency: this replica's own writes invalidate the entry at once, and a read that raced with a write never
stores its (possibly old) result, thanks to the epoch check. Writes made by *another* replica become visible here
within ``ttl_seconds`` (``PROFILES_READ_CACHE_SECONDS``, 1 s by default; 0 turns the cache off).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from voice_profiles.domain.entities import Profile


class ProfileCache:
    def __init__(
        self, ttl_seconds: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Profile]] = OrderedDict()
        self._epoch = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def epoch(self) -> int:
        """Take before reading the database; pass to ``put`` with the result."""
        return self._epoch

    def get(self, tenant_id: str, profile_id: str) -> Profile | None:
        if not self.enabled:
            return None
        entry = self._entries.get((tenant_id, profile_id))
        if entry is None or entry[0] < self._clock():
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end((tenant_id, profile_id))
        return entry[1]

    def put(self, tenant_id: str, profile_id: str, profile: Profile, epoch: int) -> None:
        if not self.enabled or epoch != self._epoch:
            return  # a write happened while we read: what we read may be older than it
        key = (tenant_id, profile_id)
        self._entries[key] = (self._clock() + self._ttl, profile)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, tenant_id: str, profile_id: str) -> None:
        self._epoch += 1
        self._entries.pop((tenant_id, profile_id), None)
