"""``voice.asr.v1.AsrService`` over the domain: maps protos to options and audio, and transcripts back to protos.

Nothing here decides anything: validation, admission and inference live in the transcriber and the engine, live
streaming in :mod:`voice_asr.live`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from google.protobuf import duration_pb2

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice_asr.engine import TranscriptionStopped
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Segment, TranscriptionResult, Word
from voice_common.audio import AudioDecodeError, AudioTooLongError, decode_audio
from voice_common.errors import InvalidArgument
from voice_common.model_manager import ModelState
from voice_common.tenancy import current_tenant

if TYPE_CHECKING:
    from grpc.aio import ServicerContext

    from voice_asr.app import AsrApp

    Context = ServicerContext[Any, Any]
else:
    Context = Any

_STATES = {
    ModelState.NOT_LOADED: pb.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
_TASKS = {pb.TASK_UNSPECIFIED: "transcribe", pb.TASK_TRANSCRIBE: "transcribe", pb.TASK_TRANSLATE: "translate"}


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return value


def options_from_proto(options: pb.RecognitionOptions, *, vad_default: bool) -> RecognitionOptions:
    """The domain options; range checks are the transcriber's (it lists every bad field at once)."""
    if options.task not in _TASKS:
        raise InvalidArgument(
            f"options.task {options.task} is not a known task; use TASK_TRANSCRIBE or TASK_TRANSLATE",
            field="options.task",
        )
    language = options.language.strip() or None
    defaults = RecognitionOptions()
    return RecognitionOptions(
        language=None if language is not None and language.lower() == "auto" else language,
        task="translate" if _TASKS[options.task] == "translate" else "transcribe",
        word_timestamps=options.word_timestamps,
        vad_filter=options.vad_filter if options.HasField("vad_filter") else vad_default,
        beam_size=options.beam_size if options.HasField("beam_size") else defaults.beam_size,
        initial_prompt=options.initial_prompt.strip() or None,
        hotwords=options.hotwords.strip() or None,
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
            queue_wait=_duration(timings.queue_wait_s),
            processing=_duration(timings.processing_s),
            real_time_factor=timings.real_time_factor,
        ),
    )


class AsrServicer(pb_grpc.AsrServiceServicer):
    def __init__(self, app: AsrApp) -> None:
        self._app = app

    async def _inline_audio(self, content: bytes) -> Any:
        limit = self._app.transcriber.limits.max_audio_seconds
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
        options = options_from_proto(request.options, vad_default=True)
        # Every option at once, before any audio is decoded or fetched.
        self._app.transcriber.validate(options)
        source = request.WhichOneof("audio")
        if source == "content":
            audio = await self._inline_audio(request.content)
        elif source in ("sample_id", "generation_id"):
            resource_id = getattr(request, source).strip()
            if not resource_id:
                raise InvalidArgument(f"{source} is empty", field=source)
            audio = await self._app.stored_audio.audio(
                current_tenant(), "sample" if source == "sample_id" else "generation", resource_id
            )
        else:
            raise InvalidArgument(
                "no audio: send the file in content, or name a stored sample_id or generation_id",
                field="audio",
            )
        try:
            result = await self._app.transcriber.transcribe(audio, options, cancelled=context.cancelled)
        except TranscriptionStopped:
            raise asyncio.CancelledError from None  # the client has gone: nobody to answer
        return result_to_proto(result)

    # -- model control ------------------------------------------------------------------------------------------

    def _model_status(self) -> pb.ModelStatus:
        status = self._app.models.status()
        engine = self._app.models.loaded
        return pb.ModelStatus(
            state=_STATES[status.state],
            model=status.model,
            device=status.device,
            compute_type=status.precision,
            multilingual=bool(engine is not None and engine.multilingual),
            queue_depth=self._app.transcriber.queue_depth,
            load_time=_duration(status.load_seconds),
            message=status.message,
        )

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: Context
    ) -> pb.GetModelStatusResponse:
        return pb.GetModelStatusResponse(status=self._model_status())

    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        configured = self._app.settings.spec()
        spec = dataclasses.replace(
            configured,
            model=request.model.strip() or configured.model,
            device=request.device.strip() or configured.device,
            compute_type=request.compute_type.strip() or configured.compute_type,
        )
        await self._app.models.load(spec)
        return pb.LoadModelResponse(status=self._model_status())

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        await self._app.models.unload()
        return pb.UnloadModelResponse(status=self._model_status())
