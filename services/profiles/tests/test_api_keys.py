"""API keys in the profile service (domain.api_keys and its repository), on SQLite and on PostgreSQL.

The keys live in the session harness's database; each test works in a tenant of its own. Tests that move time use
an ApiKeys of their own with a FakeClock over the same database.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from profiles_harness import FakeClock, Harness
from sqlalchemy import select

from voice_common import api_keys as key_format
from voice_common.errors import InvalidArgument, NotFound, Unauthenticated
from voice_profiles.domain.api_keys import ApiKeys, RateLimits
from voice_profiles.repositories.api_key_repository import ApiKeyDatabase
from voice_profiles.repositories.models import ApiKeyRow


def _keys_with_clock(harness: Harness) -> tuple[ApiKeys, FakeClock]:
    clock = FakeClock()
    return ApiKeys(ApiKeyDatabase(harness.app.database.engine), clock), clock


async def test_a_created_key_is_stored_as_its_hash_and_verifies(harness: Harness, tenant: str) -> None:
    api_keys = harness.app.api_keys
    created = await api_keys.create(
        tenant, " ci ", ["tts", "profiles:read", "tts"], RateLimits(2.5, 10, 3), timedelta(days=30)
    )
    record = created.record
    assert key_format.well_formed(created.secret)
    assert record.prefix == key_format.key_prefix(created.secret)
    assert record.tenant == tenant and record.name == "ci"
    # The platform's order, without the repeat.
    assert record.scopes == ("profiles:read", "tts")
    assert record.limits == RateLimits(2.5, 10, 3)
    assert record.expires_at == record.created_at + timedelta(days=30)

    async with harness.app.database.transaction() as tx:
        row = (await tx.session.execute(select(ApiKeyRow).where(ApiKeyRow.id == record.id))).scalar_one()
    assert row.key_sha256 == key_format.key_sha256(created.secret)
    secret_part = created.secret[key_format.PREFIX_LENGTH + 1 :]
    assert not any(secret_part in str(value) for value in vars(row).values())

    verified = await api_keys.verify(key_format.key_sha256(created.secret))
    assert verified.id == record.id and verified.tenant == tenant and verified.scopes == record.scopes
    assert verified.last_used_at is not None
    assert [r.id for r in await api_keys.list(tenant)] == [record.id]


async def test_every_bad_field_is_named_at_once(harness: Harness, tenant: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await harness.app.api_keys.create(
            tenant, "", ["tts", "superuser"], RateLimits(-1.0, -2, -3), timedelta(seconds=-5)
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "name",
        "scopes",
        "rate_limits.requests_per_second",
        "rate_limits.burst",
        "rate_limits.max_concurrent_streams",
        "ttl",
    }
    assert "'superuser'" in caught.value.message

    with pytest.raises(InvalidArgument, match="at least one of") as no_scope:
        await harness.app.api_keys.create(tenant, "ok", [])
    assert [v.field for v in no_scope.value.violations] == ["scopes"]
    with pytest.raises(InvalidArgument, match="100") as long_name:
        await harness.app.api_keys.create(tenant, "n" * 101, ["tts"])
    assert [v.field for v in long_name.value.violations] == ["name"]
    with pytest.raises(InvalidArgument) as nan_rate:
        await harness.app.api_keys.create(tenant, "ok", ["tts"], RateLimits(float("nan")))
    assert [v.field for v in nan_rate.value.violations] == ["rate_limits.requests_per_second"]
    assert await harness.app.api_keys.list(tenant, include_inactive=True) == []


async def test_last_used_is_written_at_most_once_a_minute(harness: Harness, tenant: str) -> None:
    api_keys, clock = _keys_with_clock(harness)
    created = await api_keys.create(tenant, "busy", ["tts"])
    digest = key_format.key_sha256(created.secret)
    assert created.record.last_used_at is None

    first = (await api_keys.verify(digest)).last_used_at
    assert first is not None
    clock.advance(timedelta(seconds=30))
    assert (await api_keys.verify(digest)).last_used_at == first
    (stored,) = await api_keys.list(tenant)
    assert stored.last_used_at == first

    clock.advance(timedelta(seconds=31))
    later = (await api_keys.verify(digest)).last_used_at
    assert later is not None and later - first > timedelta(minutes=1)
    (stored,) = await api_keys.list(tenant)
    assert stored.last_used_at == later


async def test_an_expired_key_is_refused_and_listed_only_with_inactive(harness: Harness, tenant: str) -> None:
    api_keys, clock = _keys_with_clock(harness)
    created = await api_keys.create(tenant, "short", ["asr"], ttl=timedelta(hours=1))
    await api_keys.verify(key_format.key_sha256(created.secret))
    clock.advance(timedelta(hours=1, seconds=1))
    with pytest.raises(Unauthenticated, match=rf"^API key {created.record.prefix} expired at 20\d\d-"):
        await api_keys.verify(key_format.key_sha256(created.secret))
    assert await api_keys.list(tenant) == []
    (listed,) = await api_keys.list(tenant, include_inactive=True)
    assert listed.state(clock.now) == "expired"


async def test_revoking_is_permanent_and_repeatable(harness: Harness, tenant: str) -> None:
    api_keys, clock = _keys_with_clock(harness)
    created = await api_keys.create(tenant, "laptop", ["profiles:read"])
    revoked = await api_keys.revoke(tenant, created.record.id.upper())
    assert revoked.revoked_at is not None and revoked.state(clock.now) == "revoked"
    clock.advance(timedelta(hours=1))
    again = await api_keys.revoke(tenant, created.record.id)
    assert again.revoked_at == revoked.revoked_at  # the first revocation is the one that counts
    with pytest.raises(Unauthenticated, match=rf"^API key {created.record.prefix} was revoked at "):
        await api_keys.verify(key_format.key_sha256(created.secret))
    assert await api_keys.list(tenant) == []


async def test_another_tenants_key_is_not_found_and_untouched(harness: Harness, tenant: str) -> None:
    api_keys = harness.app.api_keys
    created = await api_keys.create(tenant, "mine", ["tts"])
    intruder = tenant + "-b"
    assert await api_keys.list(intruder, include_inactive=True) == []
    with pytest.raises(NotFound):
        await api_keys.revoke(intruder, created.record.id)
    (still,) = await api_keys.list(tenant)
    assert still.revoked_at is None
    with pytest.raises(InvalidArgument) as bad_id:
        await api_keys.revoke(tenant, "vk_abc")
    assert [v.field for v in bad_id.value.violations] == ["id"]


async def test_the_operator_revokes_by_prefix_or_id_in_any_tenant(harness: Harness, tenant: str) -> None:
    api_keys = harness.app.api_keys
    by_prefix = await api_keys.create(tenant, "one", ["tts"])
    by_id = await api_keys.create(tenant, "two", ["tts"])
    assert (await api_keys.revoke_any_tenant(by_prefix.record.prefix)).id == by_prefix.record.id
    assert (await api_keys.revoke_any_tenant(by_id.record.id)).id == by_id.record.id
    assert await api_keys.list(tenant) == []
    every_tenant = {r.id for r in await api_keys.list(None, include_inactive=True)}
    assert {by_prefix.record.id, by_id.record.id} <= every_tenant
    with pytest.raises(NotFound):
        await api_keys.revoke_any_tenant("vk_00000000")


async def test_unknown_and_malformed_hashes(harness: Harness) -> None:
    with pytest.raises(Unauthenticated, match=r"^unknown API key$"):
        await harness.app.api_keys.verify(key_format.key_sha256(key_format.new_key()))
    for bad in ("", "abc", "A" * 64, "g" * 64, "a" * 65):
        with pytest.raises(InvalidArgument) as caught:
            await harness.app.api_keys.verify(bad)
        assert [v.field for v in caught.value.violations] == ["key_sha256"]
