"""``voice.asr.v1.AsrService`` over the domain: maps protos to options and audio, and transcripts back to protos.

Nothing here decides anything: validation, admission and inference live in the transcriber and the engine, a live
stream (its admission, its language, the reading of its audio) in :mod:`voice_asr.live_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice.audio.v1 import audio_pb2
from voice_asr.engine import AsrModelManager, AsrModelSpec, TranscriptionStopped
from voice_asr.live import LiveResult
from voice_asr.live_session import LiveStreamConfig, LiveSummary, LiveTranscriber
from voice_asr.stored_audio import StoredAudioClient
from voice_asr.transcriber import Transcriber
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Segment, TranscriptionResult, Word
from voice_common.audio import AudioDecodeError, AudioTooLongError, decode_audio
from voice_common.audio_messages import encoding_from_proto
from voice_common.errors import ErrorList, InvalidArgument
from voice_common.resource_ids import check_id
from voice_common.server.durations import duration_from_seconds
from voice_common.server.model_control import model_status_message, requested_spec
from voice_common.server.request_streams import first_message, payloads
from voice_common.tenancy import current_tenant

if TYPE_CHECKING:
    from grpc.aio import ServicerContext

    Context = ServicerContext[Any, Any]
else:
    Context = Any

_TASKS = {pb.TASK_UNSPECIFIED: "transcribe", pb.TASK_TRANSCRIBE: "transcribe", pb.TASK_TRANSLATE: "translate"}
_LIVE_OPTIONS = "config.options."


def options_from_proto(
    options: pb.RecognitionOptions, errors: ErrorList, *, vad_default: bool, prefix: str = "options."
) -> RecognitionOptions:
    """The domain options; range checks are the transcriber's. A task number the API does not define is added to
    ``errors`` (and taken as transcribe meanwhile), so the answer lists it beside every other bad field."""
    if options.task not in _TASKS:
        errors.add(
            prefix + "task",
            f"{prefix}task {options.task} is not a known task; use TASK_TRANSCRIBE or TASK_TRANSLATE",
        )
    language = options.language.strip() or None
    defaults = RecognitionOptions()
    return RecognitionOptions(
        language=None if language is not None and language.lower() == "auto" else language,
        task="translate" if _TASKS.get(options.task) == "translate" else "transcribe",
        word_timestamps=options.word_timestamps,
        vad_filter=options.vad_filter if options.HasField("vad_filter") else vad_default,
        beam_size=options.beam_size if options.HasField("beam_size") else defaults.beam_size,
        initial_prompt=options.initial_prompt.strip() or None,
        hotwords=options.hotwords.strip() or None,
        temperature=options.temperature if options.HasField("temperature") else defaults.temperature,
    )


def word_to_proto(word: Word) -> pb.Word:
    return pb.Word(
        text=word.text, start_seconds=word.start, end_seconds=word.end, probability=word.probability
    )


def segment_to_proto(segment: Segment) -> pb.Segment:
    return pb.Segment(
        text=segment.text,
        start_seconds=segment.start,
        end_seconds=segment.end,
        words=[word_to_proto(word) for word in segment.words],
        avg_logprob=segment.avg_logprob,
        no_speech_probability=segment.no_speech_probability,
    )


def result_to_proto(result: TranscriptionResult) -> pb.TranscribeResponse:
    transcript, timings = result.transcript, result.timings
    return pb.TranscribeResponse(
        text=transcript.text,
        language=transcript.language,
        language_probability=transcript.language_probability,
        duration_seconds=transcript.duration_seconds,
        segments=[segment_to_proto(segment) for segment in transcript.segments],
        timings=pb.TranscriptionTimings(
            queue_wait=duration_from_seconds(timings.queue_wait_s),
            processing=duration_from_seconds(timings.processing_s),
            real_time_factor=timings.real_time_factor,
        ),
    )


def _live_result_to_proto(result: LiveResult) -> pb.StreamingResult:
    return pb.StreamingResult(
        is_final=result.is_final,
        text=result.text,
        stability=0.0 if result.is_final else result.stability,
        start_seconds=result.start_seconds,
        end_seconds=result.end_seconds,
        words=[word_to_proto(word) for word in result.words],
        audio_seconds=result.audio_seconds,
    )


def live_config_from_proto(
    config: pb.StreamingConfig, errors: ErrorList, transcriber: Transcriber
) -> LiveStreamConfig:
    """The stream's config; every bad field (the options, the format) is added to ``errors``."""
    options = options_from_proto(config.options, errors, vad_default=False, prefix=_LIVE_OPTIONS)
    errors.collect(lambda: transcriber.validate(options, prefix=_LIVE_OPTIONS))
    encoding = errors.collect(lambda: encoding_from_proto(config.format.encoding, "config.format.encoding"))
    if encoding is None and config.format.encoding == audio_pb2.AUDIO_ENCODING_UNSPECIFIED:
        errors.add(
            "config.format.encoding",
            "config.format.encoding is required: LINEAR16 (with sample_rate_hertz) or WAV, FLAC, OGG_OPUS, MP3, AAC",
        )
    if config.format.channels not in (0, 1):
        errors.add(
            "config.format.channels",
            f"config.format.channels {config.format.channels}: send mono audio (1, or 0)",
        )
    errors.raise_if_any()
    assert encoding is not None  # raise_if_any refused the request otherwise
    return LiveStreamConfig(
        options=options,
        encoding=encoding,
        sample_rate_hertz=config.format.sample_rate_hertz,
        interim_results=config.interim_results,
    )


def _live_event_to_proto(event: LiveResult | LiveSummary) -> pb.StreamingTranscribeResponse:
    if isinstance(event, LiveSummary):
        return pb.StreamingTranscribeResponse(
            summary=pb.StreamingSummary(
                text=event.text, language=event.language, duration_seconds=event.duration_seconds
            )
        )
    return pb.StreamingTranscribeResponse(result=_live_result_to_proto(event))


class AsrServicer(pb_grpc.AsrServiceServicer):
    def __init__(
        self,
        transcriber: Transcriber,
        live: LiveTranscriber,
        stored_audio: StoredAudioClient,
        models: AsrModelManager,
        configured_spec: Callable[[], AsrModelSpec],  # what a LoadModel fills the fields it leaves empty from
    ) -> None:
        self._transcriber = transcriber
        self._live = live
        self._stored_audio = stored_audio
        self._models = models
        self._configured_spec = configured_spec

    async def _inline_audio(self, content: bytes) -> Any:
        limit = self._transcriber.limits.max_audio_seconds
        try:
            decoded = await asyncio.to_thread(
                decode_audio, content, target_rate=SAMPLE_RATE, max_seconds=limit
            )
        except AudioTooLongError as error:
            raise InvalidArgument(error.message, field="content") from None
        except AudioDecodeError as error:
            raise InvalidArgument(
                f"the audio could not be decoded: {error.message}", field="content"
            ) from None
        return decoded.samples

    async def Transcribe(self, request: pb.TranscribeRequest, context: Context) -> pb.TranscribeResponse:
        # Every bad field at once, before any audio is decoded or fetched.
        errors = ErrorList()
        options = options_from_proto(request.options, errors, vad_default=True)
        errors.collect(lambda: self._transcriber.validate(options))
        source = request.WhichOneof("audio")
        stored_id: str | None = None
        if source == "sample_id":
            stored_id = errors.collect(lambda: check_id("sample", request.sample_id, "sample_id"))
        elif source == "generation_id":
            stored_id = errors.collect(lambda: check_id("generation", request.generation_id, "generation_id"))
        elif source is None:
            errors.add(
                "audio", "no audio: send the file in content, or name a stored sample_id or generation_id"
            )
        errors.raise_if_any()
        if stored_id is not None:
            audio = await self._stored_audio.audio(
                current_tenant(), "sample" if source == "sample_id" else "generation", stored_id
            )
        else:
            audio = await self._inline_audio(request.content)
        try:
            result = await self._transcriber.transcribe(audio, options, cancelled=context.cancelled)
        except TranscriptionStopped:
            raise asyncio.CancelledError from None  # the client has gone: nobody to answer
        return result_to_proto(result)

    async def StreamingTranscribe(
        self, request_iterator: AsyncIterator[pb.StreamingTranscribeRequest], context: Context
    ) -> AsyncIterator[pb.StreamingTranscribeResponse]:
        first, rest = await first_message(
            request_iterator,
            "config",
            field="config",
            if_empty="the stream is empty: send a config message first",
            if_other="the first message must be the config (format, options, interim_results); audio comes after it",
        )
        config = live_config_from_proto(first.config, ErrorList(), self._transcriber)
        audio = payloads(
            rest,
            "audio",
            field="config",
            if_other="only the first message may be a config; the rest must be audio",
        )
        async with contextlib.aclosing(
            self._live.transcribe(config, audio, options_field=_LIVE_OPTIONS)
        ) as events:
            async for event in events:
                yield _live_event_to_proto(event)

    # -- model control ------------------------------------------------------------------------------------------

    def _model_status(self) -> pb.ModelStatus:
        engine = self._models.loaded
        return model_status_message(
            pb.ModelStatus,
            pb.ModelState,
            self._models.status(),
            precision_field="compute_type",
            multilingual=bool(engine is not None and engine.multilingual),
            queue_depth=self._transcriber.queue_depth,
        )

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: Context
    ) -> pb.GetModelStatusResponse:
        return pb.GetModelStatusResponse(status=self._model_status())

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        spec = requested_spec(
            self._configured_spec(),
            model=request.model,
            device=request.device,
            compute_type=request.compute_type,
        )
        await self._models.load(spec)
        return pb.LoadModelResponse(status=self._model_status())

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        await self._models.unload()
        return pb.UnloadModelResponse(status=self._model_status())
