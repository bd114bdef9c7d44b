"""The profile read cache: expiry, size bound, and no stale entry from a read that raced a write."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from profiles_harness import Harness

from voice_profiles.domain.entities import Profile
from voice_profiles.domain.profile_cache import ProfileCache


def profile(name: str) -> Profile:
    now = datetime.now(UTC)
    return Profile("p1", name, "", "en", now, now, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = ProfileCache(1.0, clock=clock)
    cache.put("t", "p1", profile("a"), cache.epoch())
    cached = cache.get("t", "p1")
    assert cached is not None and cached.name == "a"
    clock.now += 1.01
    assert cache.get("t", "p1") is None


def test_tenants_do_not_share_entries() -> None:
    cache = ProfileCache(10.0)
    cache.put("t1", "p1", profile("a"), cache.epoch())
    assert cache.get("t2", "p1") is None


def test_a_read_that_raced_a_write_is_not_stored() -> None:
    cache = ProfileCache(10.0)
    epoch = cache.epoch()  # a read starts...
    cache.invalidate("t", "p1")  # ...a write commits meanwhile...
    cache.put("t", "p1", profile("old"), epoch)  # ...and the read's old result must not be kept
    assert cache.get("t", "p1") is None
    cache.put("t", "p1", profile("new"), cache.epoch())
    cached = cache.get("t", "p1")
    assert cached is not None and cached.name == "new"


def test_invalidate_drops_the_entry() -> None:
    cache = ProfileCache(10.0)
    cache.put("t", "p1", profile("a"), cache.epoch())
    cache.invalidate("t", "p1")
    assert cache.get("t", "p1") is None


def test_size_is_bounded_least_recently_used_first() -> None:
    cache = ProfileCache(10.0, max_entries=2)
    for key in ("a", "b"):
        cache.put("t", key, profile(key), cache.epoch())
    assert cache.get("t", "a") is not None  # "a" is now the most recently used
    cache.put("t", "c", profile("c"), cache.epoch())
    assert cache.get("t", "b") is None
    assert cache.get("t", "a") is not None and cache.get("t", "c") is not None


def test_zero_ttl_turns_it_off() -> None:
    cache = ProfileCache(0.0)
    cache.put("t", "p1", profile("a"), cache.epoch())
    assert cache.get("t", "p1") is None and not cache.enabled


async def test_concurrent_misses_share_one_database_read(harness: Harness, tenant: str) -> None:
    from sqlalchemy import event

    profile = await harness.app.profiles.create(tenant, name="popular")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM profiles" in statement:
            statements.append(statement)

    engine = harness.app.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        results = await asyncio.gather(*(harness.app.profiles.get(tenant, profile.id) for _ in range(20)))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert {r.id for r in results} == {profile.id}
    assert len(statements) == 1
