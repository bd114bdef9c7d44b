"""voice.tts.v1.TtsService: maps protobuf messages to the domain (voice_tts) and back, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from google.protobuf import duration_pb2
from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.audio import (
    AudioEncoding,
    ReferenceLimits,
    StreamingEncoder,
    decode_reference_audio,
)
from voice_common.audio_messages import encoding_from_proto, encoding_to_proto
from voice_common.errors import ErrorList, FailedPrecondition, InvalidArgument
from voice_common.prompt_keys import PromptOwner
from voice_common.resource_ids import check_id
from voice_common.tenancy import current_tenant
from voice_tts import metrics
from voice_tts.model_manager import ModelState
from voice_tts.profile_client import sample_identity
from voice_tts.prompts import (
    PromptCache,
    ReferenceClip,
    combine_references,
    create_prompt,
    prompt_cache_key,
)
from voice_tts.synthesizer import SynthesisRequest, SynthesisResult, piece_seed, validate
from voice_tts.text_segments import IncrementalSegmenter

if TYPE_CHECKING:
    from voice_tts.app import TtsApp

Context = aio.ServicerContext[Any, Any]
logger = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
REFERENCE_FIELD = "config.voice.reference.audio"
_SEED_RANGE = 2**63
_TEXT_PLACEHOLDER = "."

_STATES = {
    ModelState.NOT_LOADED: pb.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return value


@dataclass(frozen=True)
class _Prepared:
    """A validated request with its voice prompt, and what storing the result needs."""

    request: SynthesisRequest
    tenant: str
    profile_id: str | None  # None: an inline reference (a preview)
    store: bool
    parameters: dict[str, float]
    model_id: str
    format: audio_pb2.AudioFormat
    model: Any  # what the prompt was made with and the speech runs on: held until the call ends (``holds``)


class TtsServicer(pb_grpc.TtsServiceServicer):
    def __init__(self, app: TtsApp) -> None:
        self._app = app

    # -- proto -> domain ---------------------------------------------------------------------------------------

    async def _prepare(
        self, config: pb.SynthesisConfig, text: str, holds: contextlib.AsyncExitStack
    ) -> _Prepared:
        """The request, its voice prompt and the model it runs on; ``holds`` keeps that model until the call ends."""
        tenant = current_tenant()
        # Every bad field in one answer, before any profile is read or the model is loaded: those found while
        # mapping the message (an unknown enum number, an id that is not one) and the synthesizer's own checks.
        errors = ErrorList()
        fmt = config.output_format
        encoding = (
            errors.collect(lambda: encoding_from_proto(fmt.encoding, "config.output_format.encoding"))
            or AudioEncoding.LINEAR16
        )
        if fmt.channels not in (0, 1):
            errors.add(
                "config.output_format.channels",
                f"config.output_format.channels {fmt.channels}: the audio is mono, use 1 (or 0)",
            )
        voice = config.voice
        source = voice.WhichOneof("source")
        profile_id: str | None = None
        if source == "profile_id":
            profile_id = errors.collect(
                lambda: check_id("profile", voice.profile_id, "config.voice.profile_id")
            )
        elif source is None:
            errors.add(
                "config.voice", "config.voice is missing: give a profile_id or an inline reference clip"
            )
        rate = fmt.sample_rate_hertz or SAMPLE_RATE
        sampling = config.sampling
        options: dict[str, Any] = {
            name: getattr(sampling, name) if sampling.HasField(name) else None for name in _SAMPLING_FIELDS
        }
        seed = config.seed if config.HasField("seed") else secrets.randbelow(_SEED_RANGE)
        request = SynthesisRequest(
            text=text,
            language=config.language or "auto",
            prompt=cast(Any, None),  # filled in below, once the request is known to be valid
            seed=seed,
            encoding=encoding,
            sample_rate=rate,
            **options,
        )
        errors.collect(lambda: validate(request, self._app.synthesizer.limits))
        errors.raise_if_any()

        # One model for the whole call, its voice prompt and its speech: a LoadModel that swaps in another model
        # meanwhile leaves this call on the one it began with (prompts are the model's own).
        held = await holds.enter_async_context(self._app.models.lease())
        cache = self._app.prompt_cache(held.spec)
        if profile_id is not None:
            samples = await self._app.profiles.voice_samples(tenant, profile_id)
            # The key comes from the samples' metadata, so a warm voice costs one ListSamples, no audio download.
            key = prompt_cache_key(cache.model_id, [sample_identity(sample) for sample in samples])
            # The profile service's spelling of the id: the folder its delete removes (voice_common.prompt_keys).
            owner = PromptOwner(tenant, samples[0].profile_id)
            prompt = cache.peek(owner, key)
            if prompt is None:
                clips = await self._app.profiles.download_clips(tenant, samples)
                prompt = await self._voice_prompt(cache, held.model, owner, key, clips)
        else:
            clips = [await _inline_clip(voice.reference, self._app.settings.reference_limits())]
            prompt = await self._voice_prompt(
                cache, held.model, PromptOwner(tenant), prompt_cache_key(cache.model_id, clips), clips
            )
        parameters = {name: float(value) for name, value in options.items() if value is not None}
        return _Prepared(
            request=dataclasses.replace(request, prompt=prompt),
            tenant=tenant,
            profile_id=profile_id,
            store=config.store,
            parameters=parameters,
            model_id=cache.model_id,
            format=audio_pb2.AudioFormat(
                encoding=encoding_to_proto(encoding), sample_rate_hertz=rate, channels=1
            ),
            model=held.model,
        )

    async def _voice_prompt(
        self, cache: PromptCache, model: Any, owner: PromptOwner, key: str, clips: list[ReferenceClip]
    ) -> Any:
        """The voice clone prompt of ``owner`` for ``clips`` under ``key``: from ``model``'s cache, or built by
        ``model`` from their combination."""
        try:
            reference = combine_references(clips)
        except ValueError as error:
            raise FailedPrecondition(f"the voice has no usable reference audio: {error}") from None
        prompt, _ = await cache.get_or_create(owner, key, lambda: create_prompt(model, reference))
        return prompt

    # -- the run shared by the unary and the streaming call -----------------------------------------------------

    async def _audio(
        self, prepared: _Prepared, cancelled: Callable[[], bool], holder: list[SynthesisResult]
    ) -> AsyncIterator[bytes]:
        stream = self._app.synthesizer.stream(prepared.request, model=prepared.model, cancelled=cancelled)
        try:
            async for event in stream:
                if event.audio:
                    yield event.audio
        finally:
            await stream.aclose()
        if stream.result is not None:
            holder.append(stream.result)

    async def _summary(
        self,
        rpc: str,
        prepared: _Prepared,
        result: SynthesisResult,
        arrival: float,
        first_audio: float | None,
    ) -> pb.SynthesisSummary:
        """The summary of a completed synthesis (stored first if asked), and its metrics."""
        time_to_first_audio = 0.0 if first_audio is None else first_audio - arrival
        # Observed before storing: the audio was made whether or not the history upload then works. The time to
        # first audio is the one the summary reports (what the client waited), not the synthesizer's own.
        if first_audio is not None:
            metrics.TIME_TO_FIRST_AUDIO.labels(rpc=rpc).observe(time_to_first_audio)
        if result.duration_seconds > 0:
            metrics.REAL_TIME_FACTOR.observe(result.real_time_factor)
        metrics.AUDIO_SECONDS.inc(result.duration_seconds)
        generation_id = ""
        if prepared.store and result.stop_reason != "stopped":
            generation_id = await self._app.profiles.store_generation(
                prepared.tenant,
                profile_id=prepared.profile_id,
                text=prepared.request.text,
                language=prepared.request.language,
                seed=prepared.request.seed,
                parameters=prepared.parameters,
                model_id=prepared.model_id,
                pcm=result.pcm,
                preview=prepared.profile_id is None,
            )
        now = time.perf_counter()
        return pb.SynthesisSummary(
            generation_id=generation_id,
            duration_seconds=result.duration_seconds,
            seed=prepared.request.seed,
            timings=pb.SynthesisTimings(
                time_to_first_audio=_duration(time_to_first_audio),
                total=_duration(now - arrival),
                queue_wait=_duration(result.queue_wait_s),
                real_time_factor=result.real_time_factor,
            ),
        )

    # -- RPCs ----------------------------------------------------------------------------------------------------

    # Each call holds the model it runs on (``holds``, filled by _prepare) until it has ended, however it ends.

    async def Synthesize(self, request: pb.SynthesizeRequest, context: Context) -> pb.SynthesizeResponse:
        async with contextlib.AsyncExitStack() as holds:
            return await self._synthesize(request, context, holds)

    async def SynthesizeStream(
        self, request: pb.SynthesizeStreamRequest, context: Context
    ) -> AsyncIterator[pb.SynthesizeStreamResponse]:
        async with (
            contextlib.AsyncExitStack() as holds,
            contextlib.aclosing(self._synthesize_stream(request, context, holds)) as responses,
        ):
            async for response in responses:
                yield response

    async def SynthesizeDuplex(
        self, request_iterator: AsyncIterator[pb.SynthesizeDuplexRequest], context: Context
    ) -> AsyncIterator[pb.SynthesizeDuplexResponse]:
        async with (
            contextlib.AsyncExitStack() as holds,
            contextlib.aclosing(self._synthesize_duplex(request_iterator, context, holds)) as responses,
        ):
            async for response in responses:
                yield response

    async def _synthesize(
        self, request: pb.SynthesizeRequest, context: Context, holds: contextlib.AsyncExitStack
    ) -> pb.SynthesizeResponse:
        arrival = time.perf_counter()
        prepared = await self._prepare(request.config, request.text, holds)
        holder: list[SynthesisResult] = []
        parts: list[bytes] = []
        first_audio: float | None = None
        async for data in self._audio(prepared, context.cancelled, holder):
            if first_audio is None:
                first_audio = time.perf_counter()
            parts.append(data)
        if not holder or holder[0].stop_reason == "stopped":
            raise asyncio.CancelledError  # the client went away; nothing to answer or store
        summary = await self._summary("Synthesize", prepared, holder[0], arrival, first_audio)
        return pb.SynthesizeResponse(format=prepared.format, audio=b"".join(parts), summary=summary)

    async def _synthesize_stream(
        self, request: pb.SynthesizeStreamRequest, context: Context, holds: contextlib.AsyncExitStack
    ) -> AsyncGenerator[pb.SynthesizeStreamResponse, None]:
        arrival = time.perf_counter()
        prepared = await self._prepare(request.config, request.text, holds)
        yield pb.SynthesizeStreamResponse(start=pb.StreamStart(format=prepared.format))
        holder: list[SynthesisResult] = []
        first_audio: float | None = None
        offset = 0
        audio = self._audio(prepared, context.cancelled, holder)
        try:
            async for data in audio:
                if first_audio is None:
                    first_audio = time.perf_counter()
                yield pb.SynthesizeStreamResponse(audio=audio_pb2.AudioChunk(data=data, offset_bytes=offset))
                offset += len(data)
        finally:
            await cast(Any, audio).aclose()
        if not holder or holder[0].stop_reason == "stopped":
            return  # cancelled: nothing stored, and nobody left to tell
        yield pb.SynthesizeStreamResponse(
            summary=await self._summary("SynthesizeStream", prepared, holder[0], arrival, first_audio)
        )

    async def _synthesize_duplex(
        self,
        request_iterator: AsyncIterator[pb.SynthesizeDuplexRequest],
        context: Context,
        holds: contextlib.AsyncExitStack,
    ) -> AsyncGenerator[pb.SynthesizeDuplexResponse, None]:
        """Text pieces in, audio out: each complete sentence is spoken as soon as it has arrived.

        Sentence ``i`` is sampled with ``piece_seed(seed, i)``; the sentences' 24 kHz audio goes through one
        encoder, so the chunks together are one valid stream in the requested format.
        """
        arrival = time.perf_counter()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "config":
            raise InvalidArgument("the first message must carry the config", field="config")
        # The text comes later: validate everything else now with a stand-in.
        prepared = await self._prepare(first.config, _TEXT_PLACEHOLDER, holds)
        limits = self._app.synthesizer.limits
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        received: list[str] = []

        async def read() -> None:
            segmenter = IncrementalSegmenter(limits.max_piece_chars)
            async for message in request_iterator:
                if message.WhichOneof("payload") != "text":
                    raise InvalidArgument("only the first message may carry a config", field="config")
                received.append(message.text)
                if sum(map(len, received)) > limits.max_text_chars:
                    raise InvalidArgument(
                        f"the text is longer than {limits.max_text_chars} characters; split it over several calls",
                        field="text",
                    )
                for piece in segmenter.feed(message.text):
                    pieces.put_nowait(piece)
            for piece in segmenter.finish():
                pieces.put_nowait(piece)
            pieces.put_nowait(None)

        reader = asyncio.create_task(read())
        yield pb.SynthesizeDuplexResponse(start=pb.StreamStart(format=prepared.format))
        request = prepared.request
        encoder = StreamingEncoder(request.encoding, SAMPLE_RATE, request.sample_rate)
        pcm: list[np.ndarray] = []
        first_audio: float | None = None
        offset = 0
        queue_wait = service = 0.0
        index = 0
        try:
            while True:
                piece = await _next_piece(pieces, reader)
                if piece is None:
                    break
                segment = dataclasses.replace(
                    request,
                    text=piece,
                    seed=piece_seed(request.seed, index),
                    encoding=AudioEncoding.LINEAR16,
                    sample_rate=SAMPLE_RATE,
                )
                index += 1
                holder: list[SynthesisResult] = []
                async for data in self._audio(
                    dataclasses.replace(prepared, request=segment), context.cancelled, holder
                ):
                    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
                    encoded = encoder.encode(samples)
                    if encoded:
                        if first_audio is None:
                            first_audio = time.perf_counter()
                        yield pb.SynthesizeDuplexResponse(
                            audio=audio_pb2.AudioChunk(data=encoded, offset_bytes=offset)
                        )
                        offset += len(encoded)
                if not holder or holder[0].stop_reason == "stopped":
                    return  # cancelled: nothing stored, and nobody left to tell
                pcm.append(holder[0].pcm)
                queue_wait += holder[0].queue_wait_s
                service += holder[0].real_time_factor * holder[0].duration_seconds
            if index == 0:
                raise InvalidArgument("the text is empty; give the words to speak", field="text")
            tail = encoder.flush()
            if tail:
                yield pb.SynthesizeDuplexResponse(audio=audio_pb2.AudioChunk(data=tail, offset_bytes=offset))
        finally:
            encoder.close()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        whole = np.concatenate(pcm)
        duration = whole.size / SAMPLE_RATE
        result = SynthesisResult(
            seed=request.seed,
            duration_seconds=duration,
            time_to_first_audio_s=0.0,
            total_s=0.0,
            queue_wait_s=queue_wait,
            real_time_factor=service / duration if duration > 0 else 0.0,
            stop_reason="eos",
            pcm=whole,
        )
        full = dataclasses.replace(prepared, request=dataclasses.replace(request, text="".join(received)))
        yield pb.SynthesizeDuplexResponse(
            summary=await self._summary("SynthesizeDuplex", full, result, arrival, first_audio)
        )

    def _model_status(self) -> pb.ModelStatus:
        status = self._app.models.status()
        return pb.ModelStatus(
            state=_STATES[status.state],
            model=status.model,
            device=status.device,
            dtype=status.dtype,
            gpu_memory_bytes=status.gpu_memory_bytes,
            queue_depth=self._app.synthesizer.queue_depth,
            prompt_cache_entries=len(self._app.prompt_cache()),
            load_time=_duration(status.load_seconds),
            message=status.message,
        )

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: Context
    ) -> pb.GetModelStatusResponse:
        return pb.GetModelStatusResponse(status=self._model_status())

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        configured = self._app.settings.spec()
        spec = dataclasses.replace(  # the rest as configured (attention, TTS_ALLOW_DOWNLOAD)
            configured,
            model=request.model.strip() or configured.model,
            device=request.device.strip() or configured.device,
            dtype=request.dtype.strip() or configured.dtype,
        )
        await self._app.models.load(spec)
        return pb.LoadModelResponse(status=self._model_status())

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        await self._app.models.unload()
        return pb.UnloadModelResponse(status=self._model_status())


async def _next_piece(pieces: asyncio.Queue[str | None], reader: asyncio.Task[None]) -> str | None:
    """The next piece of text, or None at the end; raises what reading the requests raised."""
    if not pieces.empty():
        return pieces.get_nowait()
    getter = asyncio.ensure_future(pieces.get())
    try:
        await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    reader.result()  # raises the reader's error
    return pieces.get_nowait() if not pieces.empty() else None


async def _inline_clip(reference: pb.VoiceReference, limits: ReferenceLimits) -> ReferenceClip:
    """A reference clip sent with the request, held to the rules of a profile sample and decoded to 24 kHz mono."""
    checked = await asyncio.to_thread(
        decode_reference_audio, reference.audio, limits, sample_rate=SAMPLE_RATE, field=REFERENCE_FIELD
    )
    # The response has no place for them: the operator's log keeps what the client was not told.
    for warning in checked.warnings:
        logger.info(
            "inline reference audio used despite a warning (%s): %s", warning.code.value, warning.message
        )
    audio = np.asarray(checked.decoded.samples, dtype=np.float32)
    transcript = reference.transcript.strip() or None
    return ReferenceClip(
        audio=audio, transcript=transcript, sha256=hashlib.sha256(audio.tobytes()).hexdigest()
    )
