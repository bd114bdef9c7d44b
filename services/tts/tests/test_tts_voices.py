"""VoiceResolver (voice_tts.voices): a warm profile voice is handed out at once while its samples are listed again
beside the synthesis, and that check brings the current prompt when the samples changed. The tiny model builds the
prompts; the samples come from an in-test source whose listing can be held (the profile service's side is covered
end to end in test_tts_service.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from voice_common.audio import ReferenceLimits
from voice_common.errors import NotFound
from voice_common.object_store import FilesystemObjectStore
from voice_testing.media_files import speechlike
from voice_tts.model_manager import ModelManager, ModelSpec
from voice_tts.prompts import ClipIdentity, ReferenceClip
from voice_tts.qwen import Qwen3TTSModel
from voice_tts.voices import ProfileVoice, VoiceResolver, VoiceSample

pytestmark = pytest.mark.usefixtures("one_thread")

TENANT = "tenant-a"
PROFILE = "profile-1"


def _clip(seed: int) -> ReferenceClip:
    audio = speechlike(3.0, rate=24_000, seed=seed).astype(np.float32)
    return ReferenceClip(
        audio=audio, transcript="Hello there.", sha256=hashlib.sha256(audio.tobytes()).hexdigest()
    )


class HeldSamples:
    """A profile's samples whose listing waits while ``open`` is clear, or raises ``error``."""

    def __init__(self) -> None:
        self.clips = [_clip(1)]
        self.open = asyncio.Event()
        self.open.set()
        self.error: Exception | None = None
        self.listings = 0

    async def voice_samples(self, tenant: str, profile_id: str) -> list[VoiceSample]:
        self.listings += 1
        await self.open.wait()
        if self.error is not None:
            raise self.error
        return [
            VoiceSample(profile_id, f"sample-{index}", ClipIdentity(clip.sha256, clip.transcript))
            for index, clip in enumerate(self.clips)
        ]

    async def download_clips(self, tenant: str, samples: Sequence[VoiceSample]) -> list[ReferenceClip]:
        return list(self.clips)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> Any:
    return Qwen3TTSModel.from_pretrained(str(tiny_dir), device_map="cpu", dtype=torch.float32)


async def test_a_warm_voice_is_handed_out_before_its_listing_returns_and_checked_after(
    tiny_dir: Path, model: Any, tmp_path: Path
) -> None:
    samples = HeldSamples()
    spec = ModelSpec(model=str(tiny_dir))
    store = FilesystemObjectStore(tmp_path)
    resolver = VoiceResolver(
        store, ModelManager(spec), samples, ReferenceLimits(), cache_entries=8, refresh_seconds=0
    )
    voice = ProfileVoice(PROFILE)
    try:
        cold = await resolver.resolve(TENANT, voice, spec, model)
        assert cold.check is None and samples.listings == 1

        samples.open.clear()  # the profile service is slow: the warm voice does not wait for it
        warm = await asyncio.wait_for(resolver.resolve(TENANT, voice, spec, model), 5)
        assert warm.prompt is cold.prompt and warm.check is not None
        confirming = asyncio.ensure_future(warm.confirmed())
        await asyncio.sleep(0.05)
        assert not confirming.done()  # nothing may be sent until the listing is back
        samples.open.set()
        assert await confirming is None and warm.prompt is cold.prompt

        samples.clips = [_clip(1), _clip(2)]  # a sample added
        changed = await resolver.resolve(TENANT, voice, spec, model)
        assert changed.prompt is cold.prompt  # started on the last listing's prompt ...
        fresh = await changed.confirmed()
        assert fresh is not None and changed.prompt is fresh  # ... and the check brought the current one
        assert not torch.equal(fresh.ref_spk_embedding, cold.prompt.ref_spk_embedding)
        again = await resolver.resolve(TENANT, voice, spec, model)
        assert again.prompt is fresh and await again.confirmed() is None

        samples.error = NotFound("profile", PROFILE)
        gone = await resolver.resolve(TENANT, voice, spec, model)
        with pytest.raises(NotFound):
            await gone.confirmed()
        unawaited = await resolver.resolve(TENANT, voice, spec, model)
        await unawaited.discard()  # a call that ended first: the failed check is taken, not left to warn
        assert unawaited.check is None
    finally:
        await resolver.close()
        await store.close()
