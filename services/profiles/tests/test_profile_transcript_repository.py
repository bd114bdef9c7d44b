"""The repository side of automatic transcripts, on SQLite and on PostgreSQL: which samples are due, claims that only
one worker wins, and stores that never overwrite a user's text or resurrect a deleted sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from field_helpers import add_sample, new_profile
from google.protobuf import field_mask_pb2
from profiles_harness import Harness, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_testing.media_files import encode_file, speechlike

WAV = encode_file(speechlike(2.5), 24000, "wav")
MAX_ATTEMPTS = 3


async def due_in(harness: Harness, tenant: str, now: datetime) -> list[tuple[str, int]]:
    """This tenant's due samples, in the order the filler gets them (other tests' tenants share the database)."""
    async with harness.app.database.transaction() as tx:
        due = await tx.samples.needing_transcript(now, MAX_ATTEMPTS, 100_000)
    return [(sample_id, attempts) for owner, sample_id, attempts in due if owner == tenant]


async def update_text(harness: Harness, tenant: str, sample_id: str, text: str) -> pb.Sample:
    request = pb.UpdateSampleRequest(
        sample=pb.Sample(id=sample_id, reference_text=text),
        update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
    )
    return (await harness.stub.UpdateSample(request, metadata=tenant_metadata(tenant))).sample


def later(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


async def test_due_samples_are_those_needing_a_text_oldest_first(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    first = await add_sample(harness, tenant, profile.id, WAV, text=None)
    await add_sample(harness, tenant, profile.id, WAV, text="Typed by the user.")
    second = await add_sample(harness, tenant, profile.id, WAV, text=None)
    assert await due_in(harness, tenant, later(0)) == [(first.id, 0), (second.id, 0)]


async def test_one_claim_wins_and_holds_the_sample_until_its_retry_time(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, WAV, text=None)
    retry_at = later(5)
    async with harness.app.database.transaction() as tx:
        assert await tx.samples.claim_transcript(tenant, sample.id, 0, retry_at)
    async with harness.app.database.transaction() as tx:
        # A second worker that read attempts=0 before the first claim loses.
        assert not await tx.samples.claim_transcript(tenant, sample.id, 0, retry_at)
        assert await tx.samples.transcript_attempts(tenant, sample.id) == (1, retry_at)
    assert await due_in(harness, tenant, later(4)) == []
    assert await due_in(harness, tenant, later(6)) == [(sample.id, 1)]


async def test_released_claim_costs_no_attempt(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, WAV, text=None)
    async with harness.app.database.transaction() as tx:
        assert await tx.samples.claim_transcript(tenant, sample.id, 0, later(5))
        await tx.samples.release_transcript_claim(tenant, sample.id, 0)
    assert await due_in(harness, tenant, later(0)) == [(sample.id, 0)]


async def test_a_sample_is_left_alone_after_the_last_attempt_until_the_user_clears_its_text(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, WAV, text=None)
    for attempts in range(MAX_ATTEMPTS):
        async with harness.app.database.transaction() as tx:
            assert await tx.samples.claim_transcript(tenant, sample.id, attempts, later(1))
    assert await due_in(harness, tenant, later(60 * 24 * 365)) == []
    await update_text(harness, tenant, sample.id, "Something.")
    cleared = await update_text(harness, tenant, sample.id, "")
    assert cleared.transcript_state == pb.TRANSCRIPT_STATE_NEEDED
    assert await due_in(harness, tenant, later(0)) == [(sample.id, 0)]


async def test_machine_text_is_stored_only_while_the_sample_still_needs_one(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    needing = await add_sample(harness, tenant, profile.id, WAV, text=None)
    edited = await add_sample(harness, tenant, profile.id, WAV, text=None)
    deleted = await add_sample(harness, tenant, profile.id, WAV, text=None)
    await update_text(harness, tenant, edited.id, "The user's words.")
    await harness.stub.DeleteSample(pb.DeleteSampleRequest(id=deleted.id), metadata=tenant_metadata(tenant))
    now = later(0)
    async with harness.app.database.transaction() as tx:
        assert await tx.samples.store_machine_transcript(tenant, needing.id, "Heard words.", now)
        assert not await tx.samples.store_machine_transcript(tenant, edited.id, "Heard words.", now)
        assert not await tx.samples.store_machine_transcript(tenant, deleted.id, "Heard words.", now)
        # A second store (another replica, late) changes nothing either.
        assert not await tx.samples.store_machine_transcript(tenant, needing.id, "Other words.", now)
        # Another tenant's id is not this tenant's sample.
        assert not await tx.samples.store_machine_transcript("t-someone-else", edited.id, "x", now)
    listed = (
        await harness.stub.ListSamples(
            pb.ListSamplesRequest(profile_id=profile.id), metadata=tenant_metadata(tenant)
        )
    ).samples
    by_id = {s.id: (s.reference_text, s.transcript_state) for s in listed}
    assert by_id == {
        needing.id: ("Heard words.", pb.TRANSCRIPT_STATE_MACHINE),
        edited.id: ("The user's words.", pb.TRANSCRIPT_STATE_PROVIDED),
    }
    assert await due_in(harness, tenant, later(0)) == []
