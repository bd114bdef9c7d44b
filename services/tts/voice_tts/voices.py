"""Which voice a synthesis speaks in: a profile's samples or a clip sent with the request, turned into the model's
voice clone prompt (built once, then taken from the prompt cache of that model).

A profile's voice costs one listing of its samples while its prompt is warm: the cache key comes from the samples'
metadata (:func:`~voice_tts.prompts.prompt_cache_key`), so the audio is downloaded only for a prompt that must be
built. Prompts are a model's own, so there is one :class:`~voice_tts.prompts.PromptCache` per loaded model.

That listing need not hold the synthesis up (:meth:`VoiceResolver.resolve`): for a profile whose last listing's
prompt is still in memory, the synthesis starts on that prompt while the samples are listed again beside it, and
the caller waits for that check (:class:`ResolvedVoice`) before it sends any audio. If the samples changed, the
check brings the new prompt and the caller starts over with it; if the profile is gone, the check raises what the
listing raised. So a request never speaks with a stale voice, and a warm voice's first audio does not wait for the
profile service.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voice_common.audio import ReferenceLimits, decode_reference_audio
from voice_common.errors import FailedPrecondition
from voice_common.object_store import ObjectStore
from voice_common.prompt_keys import PromptOwner
from voice_tts.model_manager import ModelManager, ModelSpec
from voice_tts.prompts import (
    ClipIdentity,
    PromptCache,
    ReferenceClip,
    combine_references,
    create_prompt,
    prompt_cache_key,
)
from voice_tts.qwen import VoiceClonePromptItem
from voice_tts.synthesis_types import MODEL_SAMPLE_RATE

logger = logging.getLogger(__name__)

# The API field an inline clip comes in: what a refusal of that audio names.
REFERENCE_FIELD = "config.voice.reference.audio"
# Profiles whose last listing's prompt key is remembered (a short string each).
KNOWN_LISTINGS = 4096


@dataclass(frozen=True)
class ProfileVoice:
    """The voice of a stored profile: its samples."""

    profile_id: str


@dataclass(frozen=True)
class InlineVoice:
    """A reference clip sent with the request (a preview): encoded audio and what it says, if given."""

    audio: bytes
    transcript: str = ""


Voice = ProfileVoice | InlineVoice


@dataclass(frozen=True)
class VoiceSample:
    """A profile's sample as far as its voice prompt is concerned, without its audio."""

    profile_id: str  # the profile service's spelling of the id: the folder its delete removes
    sample_id: str
    identity: ClipIdentity  # what the prompt cache key needs


class VoiceSamples(Protocol):
    """Where a profile's samples come from (the profile service: :class:`voice_tts.profile_client.ProfileClient`)."""

    async def voice_samples(self, tenant: str, profile_id: str) -> list[VoiceSample]:
        """The profile's samples; NotFound for a profile the tenant does not have, FailedPrecondition for none."""
        ...

    async def download_clips(self, tenant: str, samples: Sequence[VoiceSample]) -> list[ReferenceClip]:
        """Every sample's audio as a 24 kHz mono clip, in the given order."""
        ...


@dataclass
class ResolvedVoice:
    """A voice's prompt for a model, and, when it was taken from the profile's last listing, the check of that
    listing running beside the synthesis (see the module docstring)."""

    prompt: VoiceClonePromptItem
    model_id: str
    check: asyncio.Future[VoiceClonePromptItem | None] | None = None  # None: the prompt is current

    async def confirmed(self) -> VoiceClonePromptItem | None:
        """After the check: None if the prompt was current, else the profile's current prompt (then taken as the
        prompt). Raises what listing the samples raised (the profile gone, no samples, unreachable)."""
        check, self.check = self.check, None
        if check is None:
            return None
        fresh = await check
        if fresh is not None:
            self.prompt = fresh
        return fresh

    async def discard(self) -> None:
        """The call ended without waiting for the check: stop it, and take any error it had (nobody else will)."""
        check, self.check = self.check, None
        if check is not None:
            check.cancel()
            with contextlib.suppress(BaseException):
                await check


class VoiceResolver:
    """Voice -> voice clone prompt of a given model, with one prompt cache per loaded model."""

    def __init__(
        self,
        store: ObjectStore,
        models: ModelManager,
        samples: VoiceSamples,
        reference_limits: ReferenceLimits,
        *,
        cache_entries: int,
        refresh_seconds: float,
    ) -> None:
        self._store = store
        self._models = models
        self._samples = samples
        self._reference_limits = reference_limits
        self._cache_entries = cache_entries
        self._refresh_seconds = refresh_seconds
        self._caches: dict[ModelSpec, PromptCache] = {}
        # (tenant, profile id, model id) -> the prompt key of that profile's last listing.
        self._listings: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    def prompt_cache(self, spec: ModelSpec | None = None) -> PromptCache:
        """The prompt cache of the model loaded from ``spec`` (None: the serving one, else the configured one),
        made on first use.

        One per model, since prompts differ between models; and per spec, since a prompt in memory is on the model's
        device and in its dtype. While a LoadModel switch lets the old model's last requests finish, both models'
        caches exist; a new one drops those of models neither serving nor asked for (their requests keep theirs).
        """
        spec = spec or self._models.spec
        cache = self._caches.get(spec)
        if cache is None:
            self._caches = {kept: old for kept, old in self._caches.items() if kept == self._models.spec}
            cache = PromptCache(
                self._store,
                spec.model,
                max_entries=self._cache_entries,
                refresh_seconds=self._refresh_seconds,
            )
            self._caches[spec] = cache
        return cache

    def cached_prompts(self) -> int:
        """Prompts in memory for the serving model; a status read, so it never makes a cache (nor drops one)."""
        cache = self._caches.get(self._models.spec)
        return 0 if cache is None else len(cache)

    async def prompt(
        self, tenant: str, voice: Voice, spec: ModelSpec, model: Any
    ) -> tuple[VoiceClonePromptItem, str]:
        """``voice``'s current prompt for ``model`` (loaded from ``spec``, held by the caller) and the model id it
        is cached under."""
        cache = self.prompt_cache(spec)
        if isinstance(voice, ProfileVoice):
            return await self._profile_prompt(tenant, voice.profile_id, cache, model), cache.model_id
        clips = [await self._inline_clip(voice)]
        prompt = await self._build(
            cache, model, PromptOwner(tenant), prompt_cache_key(cache.model_id, clips), clips
        )
        return prompt, cache.model_id

    async def resolve(self, tenant: str, voice: Voice, spec: ModelSpec, model: Any) -> ResolvedVoice:
        """Like :meth:`prompt`, but a profile whose last listing's prompt is in memory gets that prompt at once,
        with the listing checked beside the synthesis (:attr:`ResolvedVoice.check`)."""
        cache = self.prompt_cache(spec)
        if isinstance(voice, ProfileVoice):
            known = self._listings.get((tenant, voice.profile_id, cache.model_id))
            # Counted once the check confirms the key: a stale key's prompt is not a hit.
            if (
                known is not None
                and (prompt := cache.peek(PromptOwner(tenant, voice.profile_id), known, count=False))
                is not None
            ):
                check = asyncio.ensure_future(
                    self._changed_prompt(tenant, voice.profile_id, cache, model, known)
                )
                return ResolvedVoice(prompt, cache.model_id, check)
        prompt, model_id = await self.prompt(tenant, voice, spec, model)
        return ResolvedVoice(prompt, model_id)

    async def _changed_prompt(
        self, tenant: str, profile_id: str, cache: PromptCache, model: Any, known: str
    ) -> VoiceClonePromptItem | None:
        """None if the profile's samples still give the ``known`` key; else its current prompt."""
        samples = await self._samples.voice_samples(tenant, profile_id)
        key = prompt_cache_key(cache.model_id, [sample.identity for sample in samples])
        if key == known:
            cache.peek(PromptOwner(tenant, profile_id), known)  # the memory hit, now that it is one
            return None
        return await self._samples_prompt(tenant, profile_id, cache, model, samples, key)

    async def _profile_prompt(
        self, tenant: str, profile_id: str, cache: PromptCache, model: Any
    ) -> VoiceClonePromptItem:
        """The profile's current prompt: its samples listed, their prompt from the cache or built."""
        samples = await self._samples.voice_samples(tenant, profile_id)
        key = prompt_cache_key(cache.model_id, [sample.identity for sample in samples])
        return await self._samples_prompt(tenant, profile_id, cache, model, samples, key)

    async def _samples_prompt(
        self,
        tenant: str,
        profile_id: str,
        cache: PromptCache,
        model: Any,
        samples: list[VoiceSample],
        key: str,
    ) -> VoiceClonePromptItem:
        """The prompt of the profile's listed ``samples`` (cache ``key``), remembered as its last listing."""
        owner = PromptOwner(tenant, samples[0].profile_id)
        prompt = cache.peek(owner, key)
        if prompt is None:
            clips = await self._samples.download_clips(tenant, samples)
            prompt = await self._build(cache, model, owner, key, clips)
        listing = (tenant, profile_id, cache.model_id)
        self._listings[listing] = key
        self._listings.move_to_end(listing)
        while len(self._listings) > KNOWN_LISTINGS:
            self._listings.popitem(last=False)
        return prompt

    async def close(self) -> None:
        for cache in self._caches.values():
            await cache.close()

    @staticmethod
    async def _build(
        cache: PromptCache, model: Any, owner: PromptOwner, key: str, clips: list[ReferenceClip]
    ) -> VoiceClonePromptItem:
        """The voice clone prompt of ``owner`` for ``clips`` under ``key``: from ``cache``, or built by ``model``
        from their combination."""
        try:
            reference = combine_references(clips)
        except ValueError as error:
            raise FailedPrecondition(f"the voice has no usable reference audio: {error}") from None
        prompt, _ = await cache.get_or_create(owner, key, lambda: create_prompt(model, reference))
        return prompt

    async def _inline_clip(self, voice: InlineVoice) -> ReferenceClip:
        """A reference clip sent with the request, held to the rules of a profile sample, decoded to 24 kHz mono."""
        checked = await asyncio.to_thread(
            decode_reference_audio,
            voice.audio,
            self._reference_limits,
            sample_rate=MODEL_SAMPLE_RATE,
            field=REFERENCE_FIELD,
        )
        # The response has no place for them: the operator's log keeps what the client was not told.
        for warning in checked.warnings:
            logger.info(
                "inline reference audio used despite a warning (%s): %s", warning.code.value, warning.message
            )
        audio = np.asarray(checked.decoded.samples, dtype=np.float32)
        transcript = voice.transcript.strip() or None
        return ReferenceClip(
            audio=audio, transcript=transcript, sha256=hashlib.sha256(audio.tobytes()).hexdigest()
        )
