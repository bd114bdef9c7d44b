"""voice.tts.v1.TtsService: maps protobuf messages to the domain (voice_tts.synthesis_service) and back, nothing
more."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

from grpc import aio

from voice.audio.v1 import audio_pb2
from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.audio import AudioEncoding
from voice_common.audio_messages import encoding_from_proto, encoding_to_proto
from voice_common.errors import ErrorList
from voice_common.resource_ids import check_id
from voice_common.server.durations import duration_from_seconds
from voice_common.server.model_control import model_status_message, requested_spec
from voice_common.server.request_streams import first_message, payloads
from voice_common.tenancy import current_tenant
from voice_tts.duplex_session import DuplexSession
from voice_tts.model_manager import ModelManager, ModelSpec
from voice_tts.synthesis_service import SynthesisService
from voice_tts.synthesis_types import MODEL_SAMPLE_RATE, SynthesisRequest, SynthesisSpec, SynthesisSummary
from voice_tts.voices import InlineVoice, ProfileVoice, Voice

Context = aio.ServicerContext[Any, Any]

_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")

_FIRST_IS_CONFIG = "the first message must carry the config"


@dataclasses.dataclass(frozen=True)
class _Call:
    """A request's config in domain terms."""

    spec: SynthesisSpec
    voice: Voice
    store: bool


def _call(config: pb.SynthesisConfig, text: str, check: Callable[[SynthesisSpec], None]) -> _Call:
    """``config`` and ``text`` as domain values, or one InvalidArgument naming every bad field: those found while
    mapping (an unknown enum number, an id that is not one) and those the domain's ``check`` finds."""
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
    source = config.voice.WhichOneof("source")
    voice: Voice = ProfileVoice("")
    if source == "profile_id":
        voice = ProfileVoice(
            errors.collect(lambda: check_id("profile", config.voice.profile_id, "config.voice.profile_id"))
            or ""
        )
    elif source == "reference":
        voice = InlineVoice(config.voice.reference.audio, config.voice.reference.transcript)
    else:
        errors.add("config.voice", "config.voice is missing: give a profile_id or an inline reference clip")
    sampling = config.sampling
    spec = SynthesisSpec(
        text=text,
        language=config.language or "auto",
        seed=config.seed if config.HasField("seed") else None,
        encoding=encoding,
        sample_rate=fmt.sample_rate_hertz or MODEL_SAMPLE_RATE,
        speed=config.speed or 1.0,  # 0: unset
        **{name: getattr(sampling, name) if sampling.HasField(name) else None for name in _SAMPLING_FIELDS},
    )
    errors.collect(lambda: check(spec))
    errors.raise_if_any()
    return _Call(spec, voice, config.store)


def _format(request: SynthesisRequest) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(
        encoding=encoding_to_proto(request.encoding), sample_rate_hertz=request.sample_rate, channels=1
    )


def _summary(summary: SynthesisSummary) -> pb.SynthesisSummary:
    return pb.SynthesisSummary(
        generation_id=summary.generation_id,
        duration_seconds=summary.duration_seconds,
        seed=summary.seed,
        timings=pb.SynthesisTimings(
            time_to_first_audio=duration_from_seconds(summary.time_to_first_audio_s),
            total=duration_from_seconds(summary.total_s),
            queue_wait=duration_from_seconds(summary.queue_wait_s),
            real_time_factor=summary.real_time_factor,
        ),
    )


class _Streaming(Protocol):
    """What a streamed call's responses are made from: a ``Synthesis`` or a ``DuplexSession``."""

    @property
    def request(self) -> SynthesisRequest: ...

    def audio(self, cancelled: Callable[[], bool]) -> AsyncGenerator[bytes, None]: ...

    async def finish(self) -> SynthesisSummary | None: ...


_StreamResponse = TypeVar("_StreamResponse", pb.SynthesizeStreamResponse, pb.SynthesizeDuplexResponse)


async def _streamed(
    response: type[_StreamResponse], call: _Streaming, context: Context
) -> AsyncGenerator[_StreamResponse, None]:
    """A streamed call's responses (SynthesizeStream's and SynthesizeDuplex's have the same fields): the start with
    the format, the audio chunks with their offsets, the summary."""
    yield response(start=pb.StreamStart(format=_format(call.request)))
    offset = 0
    async with contextlib.aclosing(call.audio(context.cancelled)) as audio:
        async for data in audio:
            yield response(audio=audio_pb2.AudioChunk(data=data, offset_bytes=offset))
            offset += len(data)
    summary = await call.finish()
    if summary is not None:  # None: cancelled, nothing stored, and nobody left to tell
        yield response(summary=_summary(summary))


class TtsServicer(pb_grpc.TtsServiceServicer):
    def __init__(self, service: SynthesisService, models: ModelManager, configured_model: ModelSpec) -> None:
        self._service = service
        self._models = models
        self._configured_model = configured_model  # what a LoadModel leaves unsaid

    # Each call holds the model it runs on until it has ended, however it ends (the ``async with`` blocks).

    async def Synthesize(self, request: pb.SynthesizeRequest, context: Context) -> pb.SynthesizeResponse:
        call = _call(request.config, request.text, self._service.check)
        async with self._service.synthesis(
            current_tenant(), call.spec, call.voice, store=call.store, rpc="Synthesize"
        ) as synthesis:
            async with contextlib.aclosing(synthesis.audio(context.cancelled)) as audio:
                data = b"".join([part async for part in audio])
            summary = await synthesis.finish()
            if summary is None:
                raise asyncio.CancelledError  # the client went away; nothing to answer or store
            return pb.SynthesizeResponse(
                format=_format(synthesis.request), audio=data, summary=_summary(summary)
            )

    async def SynthesizeStream(
        self, request: pb.SynthesizeStreamRequest, context: Context
    ) -> AsyncIterator[pb.SynthesizeStreamResponse]:
        call = _call(request.config, request.text, self._service.check)
        async with (
            self._service.synthesis(
                current_tenant(), call.spec, call.voice, store=call.store, rpc="SynthesizeStream"
            ) as synthesis,
            contextlib.aclosing(_streamed(pb.SynthesizeStreamResponse, synthesis, context)) as responses,
        ):
            async for response in responses:
                yield response

    async def SynthesizeDuplex(
        self, request_iterator: AsyncIterator[pb.SynthesizeDuplexRequest], context: Context
    ) -> AsyncIterator[pb.SynthesizeDuplexResponse]:
        session = DuplexSession(self._service, current_tenant(), rpc="SynthesizeDuplex")
        first, rest = await first_message(
            request_iterator, "config", field="config", if_empty=_FIRST_IS_CONFIG, if_other=_FIRST_IS_CONFIG
        )
        texts = payloads(rest, "text", field="config", if_other="only the first message may carry a config")
        call = _call(first.config, "", lambda spec: self._service.check(spec, text_follows=True))
        async with (
            session.open(call.spec, call.voice, store=call.store, texts=texts),
            contextlib.aclosing(_streamed(pb.SynthesizeDuplexResponse, session, context)) as responses,
        ):
            async for response in responses:
                yield response

    # -- model control -------------------------------------------------------------------------------------------

    def _model_status(self) -> pb.ModelStatus:
        status = self._models.status()
        return model_status_message(
            pb.ModelStatus,
            pb.ModelState,
            status,
            precision_field="dtype",
            gpu_memory_bytes=status.gpu_memory_bytes,
            queue_depth=self._service.queue_depth,
            prompt_cache_entries=self._service.cached_prompts(),
        )

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: Context
    ) -> pb.GetModelStatusResponse:
        return pb.GetModelStatusResponse(status=self._model_status())

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        spec = requested_spec(  # the rest as configured (attention, TTS_ALLOW_DOWNLOAD)
            self._configured_model, model=request.model, device=request.device, dtype=request.dtype
        )
        await self._models.load(spec)
        return pb.LoadModelResponse(status=self._model_status())

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        await self._models.unload()
        return pb.UnloadModelResponse(status=self._model_status())
