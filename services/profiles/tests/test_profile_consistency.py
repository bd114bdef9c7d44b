"""Nothing orphaned between the database and the object store: failures mid-upload, failed deletes, expiry, doctor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import grpc
from field_helpers import add_sample, new_profile
from profiles_harness import FakeClock, Harness, expect_error, sample_requests, tenant_metadata
from test_profile_generations import store_generation

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_testing.faulty_store import FaultyObjectStore
from voice_testing.media_files import encode_file, speechlike

MakeHarness = Callable[..., Awaitable[Harness]]


def clip(seconds: float = 2.5) -> bytes:
    return encode_file(speechlike(seconds), 24000, "wav")


async def faulty(
    make_harness: MakeHarness, harness: Harness, **faults: object
) -> tuple[Harness, FaultyObjectStore]:
    store = FaultyObjectStore(harness.store, **faults)  # type: ignore[arg-type]
    return await make_harness(store=store), store


async def test_store_failing_on_the_normalised_upload_leaves_nothing(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    broken, store = await faulty(make_harness, harness, fail_put_key_contains="normalized")
    profile = await new_profile(broken, tenant)
    error = await expect_error(
        broken.stub.AddSample(iter(sample_requests(profile.id, clip())), metadata=tenant_metadata(tenant)),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert "object store" in error.details()
    assert store.put_calls == 2  # the original went in, then the normalised audio failed
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0


async def test_store_failing_on_the_original_upload_leaves_nothing(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    broken, _ = await faulty(make_harness, harness, fail_put_key_contains="original")
    profile = await new_profile(broken, tenant)
    await expect_error(
        broken.stub.AddSample(iter(sample_requests(profile.id, clip())), metadata=tenant_metadata(tenant)),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0


async def test_store_failing_on_generation_upload_leaves_nothing(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    broken, _ = await faulty(make_harness, harness, fail_put_on_call=1)
    await expect_error(store_generation(broken, tenant, clip(1.0)), grpc.StatusCode.UNAVAILABLE)
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["generations"] == 0


async def test_profile_deleted_during_upload_leaves_nothing(harness: Harness, tenant: str) -> None:
    """The row cannot commit (its profile vanished mid-stream): the objects already written are removed."""
    profile = await new_profile(harness, tenant)
    messages = sample_requests(profile.id, clip(3.0), chunk=16 * 1024)
    md = tenant_metadata(tenant)

    async def requests() -> AsyncIterator[pb.AddSampleRequest]:
        yield messages[0]
        yield messages[1]
        await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=profile.id), metadata=md)
        for message in messages[2:]:
            yield message

    await expect_error(harness.stub.AddSample(requests(), metadata=md), grpc.StatusCode.NOT_FOUND)
    assert await harness.objects(tenant) == []
    assert await harness.rows(tenant) == {"profiles": 0, "samples": 0, "generations": 0}


async def test_failed_object_delete_is_retried_by_the_sweeper(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    broken, store = await faulty(make_harness, harness, fail_delete=True)
    profile = await new_profile(broken, tenant)
    sample = await add_sample(broken, tenant, profile.id, clip())
    await broken.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=tenant_metadata(tenant))
    # The row is gone at once; the objects wait in the outbox, which the doctor does not call orphans.
    assert (await harness.rows(tenant))["samples"] == 0
    keys = await harness.objects(tenant)
    assert len(keys) == 2
    assert set(keys) <= set(await harness.pending_deletions())
    report = await broken.app.doctor.examine()
    assert not set(keys) & set(report.objects_without_rows)
    # While the store still fails, a sweep keeps them queued (with back-off).
    result = await broken.app.sweeper.sweep_once()
    assert result.objects_deleted == 0
    store.fail_delete = False
    clock = FakeClock()
    clock.advance(timedelta(hours=2))  # past the back-off
    later = await make_harness(store=store, clock=clock)
    result = await later.app.sweeper.sweep_once()
    assert result.objects_deleted >= 2
    assert await harness.objects(tenant) == []
    assert not set(keys) & set(await harness.pending_deletions())


async def test_sweeper_deletes_expired_profiles_and_previews_only(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    clock = FakeClock()
    timed = await make_harness(clock=clock)
    md = tenant_metadata(tenant)
    temporary = await new_profile(timed, tenant, name="temp", temporary=True)
    await add_sample(timed, tenant, temporary.id, clip())
    saved = await new_profile(timed, tenant, name="saved")
    await add_sample(timed, tenant, saved.id, clip())
    preview = await store_generation(timed, tenant, clip(1.0), preview=True)
    kept = await store_generation(timed, tenant, clip(1.0), profile_id=saved.id)

    clock.advance(timedelta(minutes=21))
    await timed.app.sweeper.sweep_once()
    await expect_error(
        timed.stub.GetGeneration(pb.GetGenerationRequest(id=preview.id), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    await timed.stub.GetProfile(pb.GetProfileRequest(id=temporary.id), metadata=md)  # 12 h not over yet

    clock.advance(timedelta(hours=12))
    await timed.app.sweeper.sweep_once()
    await expect_error(
        timed.stub.GetProfile(pb.GetProfileRequest(id=temporary.id), metadata=md), grpc.StatusCode.NOT_FOUND
    )
    await timed.stub.GetProfile(pb.GetProfileRequest(id=saved.id), metadata=md)
    await timed.stub.GetGeneration(pb.GetGenerationRequest(id=kept.id), metadata=md)
    assert await harness.rows(tenant) == {"profiles": 1, "samples": 1, "generations": 1}
    keys = await harness.objects(tenant)
    assert len(keys) == 3 and all(
        saved_key in keys for saved_key in [f"tenants/{tenant}/generations/{kept.id}/audio.wav"]
    )


async def test_saved_voice_survives_the_sweeper(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    from google.protobuf import field_mask_pb2

    clock = FakeClock()
    timed = await make_harness(clock=clock)
    md = tenant_metadata(tenant)
    profile = await new_profile(timed, tenant, temporary=True)
    await timed.stub.UpdateProfile(
        pb.UpdateProfileRequest(
            profile=pb.Profile(id=profile.id), update_mask=field_mask_pb2.FieldMask(paths=["expire_time"])
        ),
        metadata=md,
    )
    clock.advance(timedelta(days=2))
    await timed.app.sweeper.sweep_once()
    await timed.stub.GetProfile(pb.GetProfileRequest(id=profile.id), metadata=md)


async def test_doctor_finds_planted_orphan_and_missing_object(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, clip())
    orphan = f"tenants/{tenant}/samples/00000000-0000-4000-8000-000000000001/original"
    await harness.store.put(orphan, b"left behind by a crash")
    missing = f"tenants/{tenant}/samples/{sample.id}/normalized.wav"
    await harness.store.delete(missing)
    report = await harness.app.doctor.examine()
    assert orphan in report.objects_without_rows
    assert missing in report.rows_without_objects
    assert not report.healthy
    # A row whose audio is gone answers DATA_LOSS, pointing at the doctor.
    error = await expect_error(
        harness.stub.GetSampleAudio(pb.GetSampleAudioRequest(id=sample.id), metadata=tenant_metadata(tenant)),
        grpc.StatusCode.DATA_LOSS,
    )
    assert "doctor" in error.details()
    await harness.app.doctor.delete_orphans(report)
    assert orphan not in await harness.objects(tenant)
    # Leave the shared store tidy for other tests' doctor runs.
    await harness.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=tenant_metadata(tenant))
    await asyncio.sleep(0)
