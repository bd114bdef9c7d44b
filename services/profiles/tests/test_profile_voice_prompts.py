"""The TTS service's voice prompts seen from the profile service: deleted with their profile (through the deletion
outbox), and accounted for by the doctor. The prompts are written where the TTS service writes them
(voice_common.prompt_keys); test_tts_prompt_storage writes them through a real TTS server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from field_helpers import new_profile
from profiles_harness import FakeClock, Harness, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_common.prompt_keys import PromptOwner, profile_prompts_prefix
from voice_testing.faulty_store import FaultyObjectStore

MakeHarness = Callable[..., Awaitable[Harness]]
MODEL_FOLDER = "0123456789abcdef" * 2  # what voice_tts.prompts.model_hash makes: 32 hex digits


def prompt_key(owner: PromptOwner, name: str) -> str:
    return f"{owner.prefix}{MODEL_FOLDER}/{name}.safetensors"


async def put_prompts(harness: Harness, *keys: str) -> None:
    for key in keys:
        await harness.store.put(key, b"a voice prompt", "application/vnd.voice-tts.prompt+safetensors")


async def test_deleting_a_profile_deletes_its_voice_prompts(harness: Harness, tenant: str) -> None:
    removed = await new_profile(harness, tenant)
    kept = await new_profile(harness, tenant)
    removed_prompts = [prompt_key(PromptOwner(tenant, removed.id), name) for name in ("a" * 64, "b" * 64)]
    others = [prompt_key(PromptOwner(tenant, kept.id), "a" * 64), prompt_key(PromptOwner(tenant), "a" * 64)]
    await put_prompts(harness, *removed_prompts, *others)

    await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=removed.id), metadata=tenant_metadata(tenant))
    assert await harness.objects(tenant) == sorted(others)
    assert not [key for key in await harness.pending_deletions() if key.startswith(f"tenants/{tenant}/")]
    await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=kept.id), metadata=tenant_metadata(tenant))
    assert await harness.objects(tenant) == [others[1]]  # inline prompts expire in the TTS service
    await harness.store.delete(others[1])


async def test_a_failed_prompt_delete_is_retried_by_the_sweeper(
    harness: Harness, make_harness: MakeHarness, tenant: str
) -> None:
    store = FaultyObjectStore(harness.store, fail_delete=True)
    broken = await make_harness(store=store)
    profile = await new_profile(broken, tenant)
    prompt = prompt_key(PromptOwner(tenant, profile.id), "c" * 64)
    await put_prompts(harness, prompt)
    await broken.stub.DeleteProfile(pb.DeleteProfileRequest(id=profile.id), metadata=tenant_metadata(tenant))
    # The profile is gone at once; its prompt folder waits in the outbox, which the doctor does not call orphaned.
    assert await harness.objects(tenant) == [prompt]
    assert profile_prompts_prefix(tenant, profile.id) in await harness.pending_deletions()
    assert prompt not in (await broken.app.doctor.examine()).objects_without_rows

    store.fail_delete = False
    clock = FakeClock()
    clock.advance(timedelta(hours=2))  # past the back-off
    later = await make_harness(store=store, clock=clock)
    await later.app.sweeper.sweep_once()
    assert await harness.objects(tenant) == []
    assert profile_prompts_prefix(tenant, profile.id) not in await harness.pending_deletions()


async def test_doctor_counts_owned_and_orphaned_prompts(harness: Harness, tenant: str) -> None:
    before = await harness.app.doctor.examine()
    profile = await new_profile(harness, tenant)
    deleted = await new_profile(harness, tenant)
    owned = [prompt_key(PromptOwner(tenant, profile.id), "a" * 64), prompt_key(PromptOwner(tenant), "b" * 64)]
    late = prompt_key(PromptOwner(tenant, deleted.id), "c" * 64)
    await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=deleted.id), metadata=tenant_metadata(tenant))
    orphans = [
        late,  # written by a synthesis that raced the profile's deletion
        f"tenants/{tenant}/prompts/stray.safetensors",  # no owner in the layout
        f"tts/prompts/{MODEL_FOLDER}/{'d' * 64}.safetensors",  # the layout before prompts sat under tenants
    ]
    await put_prompts(harness, *owned, *orphans)

    report = await harness.app.doctor.examine()
    assert report.prompts_owned - before.prompts_owned == 2
    assert report.prompts_orphaned - before.prompts_orphaned == 3
    assert set(orphans) <= set(report.objects_without_rows)
    assert not set(owned) & set(report.objects_without_rows)
    assert not report.healthy

    await harness.app.doctor.delete_orphans(report)
    assert await harness.objects(tenant) == sorted(owned)
    assert [key async for key in harness.store.list_keys("tts/")] == []
    # Leave the shared store tidy for other tests' doctor runs.
    await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=profile.id), metadata=tenant_metadata(tenant))
    await harness.store.delete(owned[1])
