"""Profiles through a real server: create, read, list with paging and filters, update with masks, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from profiles_harness import Harness, expect_error, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb


async def create(harness: Harness, tenant: str, name: str, **fields: Any) -> pb.Profile:
    response = await harness.stub.CreateProfile(
        pb.CreateProfileRequest(name=name, **fields), metadata=tenant_metadata(tenant)
    )
    return response.profile


async def test_create_then_get(harness: Harness, tenant: str) -> None:
    created = await create(harness, tenant, "Narrator", description="warm and calm", language="en")
    assert created.id and created.name == "Narrator" and created.language == "en"
    assert not created.HasField("expire_time")
    got = (
        await harness.stub.GetProfile(pb.GetProfileRequest(id=created.id), metadata=tenant_metadata(tenant))
    ).profile
    assert got == created
    assert got.sample_count == 0 and got.total_sample_seconds == 0


async def test_language_defaults_to_auto(harness: Harness, tenant: str) -> None:
    assert (await create(harness, tenant, "Anyone")).language == "auto"


async def test_temporary_profile_expires_after_default_ttl(harness: Harness, tenant: str) -> None:
    profile = await create(harness, tenant, "Upload", temporary=True)
    expires = profile.expire_time.ToDatetime(tzinfo=UTC)
    created = profile.create_time.ToDatetime(tzinfo=UTC)
    assert abs((expires - created) - timedelta(hours=12)) < timedelta(seconds=1)
    custom = await create(harness, tenant, "Short", temporary=True, ttl=duration_pb2.Duration(seconds=60))
    assert custom.expire_time.ToDatetime(tzinfo=UTC) - custom.create_time.ToDatetime(tzinfo=UTC) == timedelta(
        seconds=60
    )


async def test_names_are_unique_per_tenant_ignoring_case(harness: Harness, tenant: str) -> None:
    await create(harness, tenant, "Alice")
    error = await expect_error(
        harness.stub.CreateProfile(pb.CreateProfileRequest(name="alice"), metadata=tenant_metadata(tenant)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "alice" in error.details()
    # Another tenant may use the same name.
    await create(harness, tenant + "-other", "Alice")


async def test_list_pages_through_everything_newest_first(harness: Harness, tenant: str) -> None:
    ids = [(await create(harness, tenant, f"voice {i:02d}")).id for i in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await harness.stub.ListProfiles(
            pb.ListProfilesRequest(page_size=3, page_token=token), metadata=tenant_metadata(tenant)
        )
        seen += [p.id for p in response.profiles]
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_filters_by_name_and_language(harness: Harness, tenant: str) -> None:
    await create(harness, tenant, "Deep Bass", language="en")
    await create(harness, tenant, "deep_alto", language="de")
    await create(harness, tenant, "Tenor", language="en")
    await create(harness, tenant, "100% real", language="en")
    md = tenant_metadata(tenant)
    names = lambda r: sorted(p.name for p in r.profiles)  # noqa: E731
    assert names(
        await harness.stub.ListProfiles(pb.ListProfilesRequest(name_contains="DEEP"), metadata=md)
    ) == [
        "Deep Bass",
        "deep_alto",
    ]
    assert names(
        await harness.stub.ListProfiles(
            pb.ListProfilesRequest(name_contains="deep", language="en"), metadata=md
        )
    ) == ["Deep Bass"]
    # LIKE wildcards in the filter are literal characters.
    assert names(await harness.stub.ListProfiles(pb.ListProfilesRequest(name_contains="%"), metadata=md)) == [
        "100% real"
    ]
    assert (
        names(await harness.stub.ListProfiles(pb.ListProfilesRequest(name_contains="p_b"), metadata=md)) == []
    )


async def test_update_with_field_mask(harness: Harness, tenant: str) -> None:
    profile = await create(harness, tenant, "Draft", description="old", temporary=True)
    md = tenant_metadata(tenant)
    updated = (
        await harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=profile.id, name="Final", description="ignored, not in mask"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
        )
    ).profile
    assert updated.name == "Final" and updated.description == "old"
    assert updated.HasField("expire_time")
    assert updated.update_time.ToDatetime() >= profile.update_time.ToDatetime()
    # "Save the voice": clearing the expiry makes the profile permanent.
    saved = (
        await harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=profile.id), update_mask=field_mask_pb2.FieldMask(paths=["expire_time"])
            ),
            metadata=md,
        )
    ).profile
    assert not saved.HasField("expire_time")
    # And an expiry can be set again.
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    again = (
        await harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=profile.id, expire_time=later, language="fr"),
                update_mask=field_mask_pb2.FieldMask(paths=["expire_time", "language"]),
            ),
            metadata=md,
        )
    ).profile
    assert again.HasField("expire_time") and again.language == "fr"


async def test_update_to_a_taken_name_is_already_exists(harness: Harness, tenant: str) -> None:
    await create(harness, tenant, "One")
    two = await create(harness, tenant, "Two")
    await expect_error(
        harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=two.id, name="ONE"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=tenant_metadata(tenant),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_delete_then_get_is_not_found(harness: Harness, tenant: str) -> None:
    profile = await create(harness, tenant, "Gone")
    md = tenant_metadata(tenant)
    response = await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=profile.id), metadata=md)
    assert response.deleted_sample_count == 0
    await expect_error(
        harness.stub.GetProfile(pb.GetProfileRequest(id=profile.id), metadata=md), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=profile.id), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await harness.rows(tenant) == {"profiles": 0, "samples": 0, "generations": 0}


async def test_other_tenants_ids_look_missing(harness: Harness, tenant: str) -> None:
    theirs = await create(harness, tenant, "Private")
    intruder = tenant_metadata(tenant + "-intruder")
    missing = "00000000-0000-4000-8000-000000000000"
    for profile_id in (theirs.id, missing):
        error = await expect_error(
            harness.stub.GetProfile(pb.GetProfileRequest(id=profile_id), metadata=intruder),
            grpc.StatusCode.NOT_FOUND,
        )
        assert error.details() == f"profile {profile_id!r} not found"
    await expect_error(
        harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=theirs.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(
                profile=pb.Profile(id=theirs.id, name="Mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=intruder,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await harness.stub.ListProfiles(pb.ListProfilesRequest(), metadata=intruder)
    assert list(listed.profiles) == []
    still = await harness.stub.GetProfile(
        pb.GetProfileRequest(id=theirs.id), metadata=tenant_metadata(tenant)
    )
    assert still.profile.name == "Private"
