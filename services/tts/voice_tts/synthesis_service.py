"""The TTS service's domain: what one synthesis needs, from a checked request to stored, measured audio.

A call goes through :class:`SynthesisService` in four steps, whatever its RPC:

1. :meth:`~SynthesisService.check`: every bad field at once, before any profile is read or the model is loaded.
2. :meth:`~SynthesisService.prepare`: hold the serving model for the whole call and make the voice prompt with it
   (:class:`~voice_tts.voices.VoiceResolver`). A LoadModel that swaps in another model meanwhile leaves the call on
   the one it began with, since prompts are a model's own.
3. The run on the :class:`~voice_tts.synthesis_engine.SynthesisEngine` (admission, batching, encoding).
4. :meth:`~SynthesisService.record`: the metrics, the generation stored in the history if asked, the summary.

:class:`Synthesis` is that path for a text known in full (Synthesize, SynthesizeStream);
:class:`voice_tts.duplex_session.DuplexSession` is the one for text arriving in pieces. Nothing here knows grpc or
protobuf: the servicer maps messages to these types and back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from voice_tts import metrics
from voice_tts.model_manager import ModelManager
from voice_tts.synthesis_engine import SynthesisEngine, SynthesisStream
from voice_tts.synthesis_types import (
    SynthesisLimits,
    SynthesisRequest,
    SynthesisResult,
    SynthesisSpec,
    SynthesisSummary,
    validate,
)
from voice_tts.voices import ProfileVoice, ResolvedVoice, Voice, VoiceResolver

# Stands in for the text while a call whose text comes later is checked (SynthesizeDuplex's config).
TEXT_PLACEHOLDER = "."


class GenerationHistory(Protocol):
    """Where finished speech is kept (the profile service: :class:`voice_tts.profile_client.ProfileClient`)."""

    async def store_generation(
        self,
        tenant: str,
        *,
        profile_id: str | None,
        text: str,
        language: str,
        seed: int,
        parameters: dict[str, float],
        model_id: str,
        pcm: np.ndarray,
        preview: bool,
    ) -> str:
        """Store float32 24 kHz mono speech; returns the generation's id."""
        ...


@dataclass(frozen=True)
class PreparedSynthesis:
    """A checked call with its voice prompt, the model it runs on, and what storing and measuring it need."""

    request: SynthesisRequest
    tenant: str
    profile_id: str | None  # None: an inline reference (a preview)
    store: bool
    model_id: str
    model: Any  # what the prompt was made with and the speech runs on: held until the call ends
    rpc: str  # the metrics' label
    arrival: float  # when the call arrived (the service's clock)
    voice: ResolvedVoice  # the prompt's source, with its pending check if it came from the last listing


class SynthesisService:
    def __init__(
        self,
        engine: SynthesisEngine,
        models: ModelManager,
        voices: VoiceResolver,
        history: GenerationHistory,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._engine = engine
        self._models = models
        self._voices = voices
        self._history = history
        self.clock = clock

    @property
    def limits(self) -> SynthesisLimits:
        return self._engine.limits

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not finished."""
        return self._engine.queue_depth

    def cached_prompts(self) -> int:
        """Voice prompts in memory for the serving model (a status read: it creates nothing)."""
        return self._voices.cached_prompts()

    def check(self, spec: SynthesisSpec, *, text_follows: bool = False) -> None:
        """Raise one InvalidArgument naming every bad field of ``spec``; ``text_follows``: its text comes later, so
        only the rest is checked now."""
        validate(dataclasses.replace(spec, text=TEXT_PLACEHOLDER) if text_follows else spec, self.limits)

    @asynccontextmanager
    async def prepare(
        self,
        tenant: str,
        spec: SynthesisSpec,
        voice: Voice,
        *,
        store: bool,
        rpc: str,
        arrival: float,
        text_follows: bool = False,
    ) -> AsyncIterator[PreparedSynthesis]:
        """The checked call with its voice prompt; the model it runs on is held until the block ends."""
        self.check(spec, text_follows=text_follows)
        async with self._models.lease() as held:
            resolved = await self._voices.resolve(tenant, voice, held.spec, held.model)
            try:
                yield PreparedSynthesis(
                    request=spec.with_seed().with_prompt(resolved.prompt),
                    tenant=tenant,
                    profile_id=voice.profile_id if isinstance(voice, ProfileVoice) else None,
                    store=store,
                    model_id=resolved.model_id,
                    model=held.model,
                    rpc=rpc,
                    arrival=arrival,
                    voice=resolved,
                )
            finally:
                await resolved.discard()

    @staticmethod
    async def confirm_voice(prepared: PreparedSynthesis) -> PreparedSynthesis:
        """``prepared`` once its voice's check is back (at once if it has none): unchanged if its prompt is current,
        else with the profile's current prompt. Raises what the check raised (the profile gone, no samples).
        Nothing may be sent before this: until then the prompt may be a stale one."""
        fresh = await prepared.voice.confirmed()
        if fresh is None:
            return prepared
        return dataclasses.replace(prepared, request=dataclasses.replace(prepared.request, prompt=fresh))

    def stream(
        self, prepared: PreparedSynthesis, request: SynthesisRequest, cancelled: Callable[[], bool]
    ) -> SynthesisStream:
        """``request`` (the prepared one, or a part of it) run on the call's model."""
        return self._engine.stream(request, model=prepared.model, cancelled=cancelled)

    async def record(
        self, prepared: PreparedSynthesis, text: str, result: SynthesisResult, first_audio: float | None
    ) -> SynthesisSummary:
        """The summary of a completed synthesis of ``text`` (stored first if asked), and its metrics."""
        time_to_first_audio = 0.0 if first_audio is None else first_audio - prepared.arrival
        # Observed before storing: the audio was made whether or not the history upload then works. The time to
        # first audio is the one the summary reports (what the client waited), not the engine's own.
        if first_audio is not None:
            metrics.TIME_TO_FIRST_AUDIO.labels(rpc=prepared.rpc).observe(time_to_first_audio)
        if result.duration_seconds > 0:
            metrics.REAL_TIME_FACTOR.observe(result.real_time_factor)
        metrics.AUDIO_SECONDS.inc(result.duration_seconds)
        generation_id = ""
        request = prepared.request
        if prepared.store and result.stop_reason != "stopped":
            generation_id = await self._history.store_generation(
                prepared.tenant,
                profile_id=prepared.profile_id,
                text=text,
                language=request.language,
                seed=request.seed,
                parameters=request.parameters(),
                model_id=prepared.model_id,
                pcm=result.pcm,
                preview=prepared.profile_id is None,
            )
        return SynthesisSummary(
            generation_id=generation_id,
            duration_seconds=result.duration_seconds,
            seed=request.seed,
            time_to_first_audio_s=time_to_first_audio,
            total_s=self.clock() - prepared.arrival,
            queue_wait_s=result.queue_wait_s,
            real_time_factor=result.real_time_factor,
        )

    @asynccontextmanager
    async def synthesis(
        self, tenant: str, spec: SynthesisSpec, voice: Voice, *, store: bool, rpc: str
    ) -> AsyncIterator[Synthesis]:
        """A synthesis of a text known in full, ready to run; its model is held until the block ends."""
        arrival = self.clock()
        async with self.prepare(tenant, spec, voice, store=store, rpc=rpc, arrival=arrival) as prepared:
            yield Synthesis(self, prepared)


class Synthesis:
    """One call's synthesis of a whole text: iterate :meth:`audio`, then :meth:`finish`."""

    def __init__(self, service: SynthesisService, prepared: PreparedSynthesis) -> None:
        self._service = service
        self._prepared = prepared
        self._result: SynthesisResult | None = None
        self._first_audio: float | None = None

    @property
    def request(self) -> SynthesisRequest:
        return self._prepared.request

    async def audio(self, cancelled: Callable[[], bool]) -> AsyncGenerator[bytes, None]:
        """The encoded audio as it is made; ``cancelled()`` turning true stops it within a frame.

        The synthesis starts at once; its first audio waits for the voice's check (:meth:`SynthesisService.
        confirm_voice`), which has usually long returned by then. If the profile's samples changed meanwhile,
        what was made is dropped unsent and the synthesis starts over with the current prompt."""
        while True:
            prepared = self._prepared
            stream = self._service.stream(prepared, prepared.request, cancelled)
            stale = False
            try:
                async for event in stream:
                    if not event.audio:
                        continue
                    if self._first_audio is None:
                        self._prepared = await self._service.confirm_voice(prepared)
                        if self._prepared is not prepared:
                            stale = True
                            break
                        self._first_audio = self._service.clock()
                    yield event.audio
            finally:
                await stream.aclose()
            if not stale:
                break
        self._result = stream.result

    async def finish(self) -> SynthesisSummary | None:
        """After :meth:`audio` ended: the summary (the generation stored first, if asked); None if the synthesis
        was stopped (the client went away), when nothing is stored and there is nobody to tell."""
        result = self._result
        if result is None or result.stop_reason == "stopped":
            return None
        return await self._service.record(
            self._prepared, self._prepared.request.text, result, self._first_audio
        )
