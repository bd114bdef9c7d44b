"""Where the TTS service keeps voice prompts and when they go: under their tenant, with their profile, after the TTL.

A real profile server and real TTS servers (tiny model) sharing one object store, as in test_tts_service.
"""

from __future__ import annotations

import os
import uuid

import pytest
from test_tts_service import (
    TEXT,
    Servers,
    config,
    meta,
    reference_wav,
    sample_value,
    servers,
    tts_server,
    tts_settings,
)

from voice.profiles.v1 import profiles_service_pb2 as ppb
from voice.tts.v1 import tts_service_pb2 as pb
from voice_common.object_store import FilesystemObjectStore
from voice_common.prompt_keys import PromptOwner, profile_prompts_prefix
from voice_tts.prompts import model_hash

__all__ = ["servers"]  # the module's servers, started for this module too
pytestmark = pytest.mark.usefixtures("one_thread")


async def keys_under(servers: Servers, prefix: str) -> set[str]:
    return {key async for key in servers.app.store.list_keys(prefix)}


def misses() -> float:
    return sample_value("voice_tts_prompt_cache_requests_total", {"result": "miss"})


async def synthesize(servers: Servers, tenant: str, voice: pb.Voice | None = None) -> None:
    voice = voice or pb.Voice(reference=pb.VoiceReference(audio=reference_wav(seed=4)))
    await servers.tts.Synthesize(
        pb.SynthesizeRequest(config=config(voice=voice), text=TEXT), metadata=meta(tenant)
    )


async def voiced_profile(servers: Servers, tenant: str, name: str) -> str:
    response = await servers.profiles.CreateProfile(
        ppb.CreateProfileRequest(name=name, language="en"), metadata=meta(tenant)
    )
    profile_id: str = response.profile.id
    metadata = ppb.SampleMetadata(
        profile_id=profile_id, file_name="sample.wav", mime_type="audio/wav", reference_text="Hello there."
    )
    messages = [ppb.AddSampleRequest(metadata=metadata), ppb.AddSampleRequest(chunk=reference_wav(seed=2))]
    await servers.profiles.AddSample(iter(messages), metadata=meta(tenant))
    return profile_id


def backdate(servers: Servers, keys: set[str], seconds: float) -> None:
    """Make the objects look last written ``seconds`` ago (the filesystem store keeps that as the file's mtime)."""
    store = servers.app.store
    assert isinstance(store, FilesystemObjectStore)
    for key in keys:
        path = store.root / key
        when = path.stat().st_mtime - seconds
        os.utime(path, (when, when))


async def test_inline_reference_prompts_are_kept_under_the_tenant(servers: Servers) -> None:
    first, second = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(2))
    before = misses()
    await synthesize(servers, first)
    # Identical audio for another tenant: its own prompt, built from its own request, never the first tenant's.
    await synthesize(servers, second)
    assert misses() - before == 2
    folder = model_hash(servers.app.voices.prompt_cache().model_id)
    for tenant in (first, second):
        keys = await keys_under(servers, f"tenants/{tenant}/")
        assert len(keys) == 1, keys
        assert next(iter(keys)).startswith(f"{PromptOwner(tenant).prefix}{folder}/"), keys
    assert await keys_under(servers, "tts/") == set()


async def test_a_profiles_prompts_go_with_the_profile(servers: Servers) -> None:
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    # The same recording in both: the same cache key, but each profile's prompt is its own.
    removed = await voiced_profile(servers, tenant, "Removed")
    kept = await voiced_profile(servers, tenant, "Kept")
    for profile_id in (removed, kept):
        await synthesize(servers, tenant, pb.Voice(profile_id=profile_id))
    await synthesize(servers, tenant)  # an inline reference of the same tenant
    removed_prompts = await keys_under(servers, profile_prompts_prefix(tenant, removed))
    assert len(removed_prompts) == 1, removed_prompts
    others = await keys_under(servers, f"tenants/{tenant}/prompts/") - removed_prompts
    assert len(others) == 2, others

    await servers.profiles.DeleteProfile(
        ppb.DeleteProfileRequest(id=removed, delete_generations=True), metadata=meta(tenant)
    )
    assert await keys_under(servers, profile_prompts_prefix(tenant, removed)) == set()
    assert await keys_under(servers, f"tenants/{tenant}/prompts/") == others


async def test_prompts_unused_for_the_ttl_are_swept(servers: Servers) -> None:
    unused, in_use, fresh = (f"t-{uuid.uuid4().hex[:12]}" for _ in range(3))
    for tenant in (unused, in_use, fresh):
        await synthesize(servers, tenant)
    old = await keys_under(servers, f"tenants/{unused}/") | await keys_under(servers, f"tenants/{in_use}/")
    legacy = f"tts/prompts/{model_hash('old-model')}/{'a' * 64}.safetensors"  # the layout before tenants
    await servers.app.store.put(legacy, b"a prompt of the old layout")
    backdate(servers, old | {legacy}, 2 * 3600)

    settings = tts_settings(servers, prompt_ttl_seconds=3600)
    async with tts_server(servers, settings) as replica:
        # A replica that serves a prompt from the store renews it: in use, it is not swept.
        voice = pb.Voice(reference=pb.VoiceReference(audio=reference_wav(seed=4)))
        await replica.tts.Synthesize(
            pb.SynthesizeRequest(config=config(voice=voice), text=TEXT), metadata=meta(in_use)
        )
        report = await replica.app.prompt_expiry.sweep_once()
    assert report.deleted == 2
    assert await keys_under(servers, f"tenants/{unused}/") == set()
    assert await keys_under(servers, "tts/") == set()
    assert len(await keys_under(servers, f"tenants/{in_use}/")) == 1
    assert len(await keys_under(servers, f"tenants/{fresh}/")) == 1
    # TTL 0 keeps every prompt.
    async with tts_server(servers, tts_settings(servers, prompt_ttl_seconds=0)) as keeper:
        backdate(servers, await keys_under(servers, f"tenants/{fresh}/"), 10 * 365 * 86400)
        assert (await keeper.app.prompt_expiry.sweep_once()).deleted == 0
    assert len(await keys_under(servers, f"tenants/{fresh}/")) == 1
