"""``voice.asr.v1.AsrService`` over the domain: maps protos to options and audio, and transcripts back to protos.

Nothing here decides anything: validation, admission and inference live in the transcriber and the engine, live
streaming in :mod:`voice_asr.live`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from google.protobuf import duration_pb2

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice.audio.v1 import audio_pb2
from voice_asr import metrics
from voice_asr.engine import TranscriptionStopped, WhisperEngine
from voice_asr.live import LiveResult, StreamingRecognizer, words_of
from voice_asr.live import pass_options as live_pass_options
from voice_asr.stream_decoder import StreamDecoder, open_stream_decoder
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Segment, TranscriptionResult, Word
from voice_common.audio import AudioDecodeError, AudioTooLongError, decode_audio
from voice_common.audio_messages import encoding_from_proto
from voice_common.cancellation import wait_through_cancellation
from voice_common.errors import ErrorList, InvalidArgument, ResourceExhausted
from voice_common.model_manager import ModelState
from voice_common.resource_ids import check_id
from voice_common.tenancy import current_tenant

if TYPE_CHECKING:
    from grpc.aio import ServicerContext

    from voice_asr.app import AsrApp

    Context = ServicerContext[Any, Any]
else:
    Context = Any

T = TypeVar("T")

_STATES = {
    ModelState.NOT_LOADED: pb.MODEL_STATE_NOT_LOADED,
    ModelState.LOADING: pb.MODEL_STATE_LOADING,
    ModelState.READY: pb.MODEL_STATE_READY,
    ModelState.FAILED: pb.MODEL_STATE_FAILED,
}
# A live stream without a language hint takes the language of the first pass that heard this much audio and is at
# least this sure of it. Whisper base took half a second of German for English.
_HEARD_FOR_LANGUAGE_SECONDS = 3.0
_SURE_OF_LANGUAGE = 0.5
_TASKS = {pb.TASK_UNSPECIFIED: "transcribe", pb.TASK_TRANSCRIBE: "transcribe", pb.TASK_TRANSLATE: "translate"}


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return value


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


async def _read_audio(
    requests: AsyncIterator[pb.StreamingTranscribeRequest], chunks: asyncio.Queue[bytes | None]
) -> None:
    """Move the client's audio messages to ``chunks``; None at the half-close."""
    async for message in requests:
        if message.WhichOneof("payload") != "audio":
            raise InvalidArgument(
                "only the first message may be a config; the rest must be audio", field="config"
            )
        if message.audio:
            chunks.put_nowait(message.audio)
    chunks.put_nowait(None)


async def _next_chunk(chunks: asyncio.Queue[bytes | None], reader: asyncio.Future[None]) -> bytes | None:
    """The next item from ``chunks``; raises what reading the client's messages raised."""
    if not chunks.empty():
        return chunks.get_nowait()
    getter: asyncio.Future[Any] = asyncio.ensure_future(chunks.get())
    waiting: set[asyncio.Future[Any]] = {getter, reader}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    reader.result()  # the reader failed: its error
    return await chunks.get()  # the reader ended normally: its None is queued


async def _in_thread(function: Callable[[], T]) -> T:
    """``function()`` in a worker thread; if this task is cancelled meanwhile, wait for the thread to end anyway
    (it holds the engine and a transcription slot) and re-raise the cancellation afterwards."""
    worker = asyncio.ensure_future(asyncio.to_thread(function))
    await wait_through_cancellation(worker)
    return worker.result()


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
        # Every bad field at once, before any audio is decoded or fetched.
        errors = ErrorList()
        options = options_from_proto(request.options, errors, vad_default=True)
        errors.collect(lambda: self._app.transcriber.validate(options))
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
            audio = await self._app.stored_audio.audio(
                current_tenant(), "sample" if source == "sample_id" else "generation", stored_id
            )
        else:
            audio = await self._inline_audio(request.content)
        try:
            result = await self._app.transcriber.transcribe(audio, options, cancelled=context.cancelled)
        except TranscriptionStopped:
            raise asyncio.CancelledError from None  # the client has gone: nobody to answer
        return result_to_proto(result)

    # -- live streaming ----------------------------------------------------------------------------------------

    async def StreamingTranscribe(
        self, request_iterator: AsyncIterator[pb.StreamingTranscribeRequest], context: Context
    ) -> AsyncIterator[pb.StreamingTranscribeResponse]:
        requests = request_iterator.__aiter__()
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise InvalidArgument(
                "the stream is empty: send a config message first", field="config"
            ) from None
        if first.WhichOneof("payload") != "config":
            raise InvalidArgument(
                "the first message must be the config (format, options, interim_results); audio comes after it",
                field="config",
            )
        config = first.config
        errors = ErrorList()
        options = options_from_proto(config.options, errors, vad_default=False, prefix="config.options.")
        errors.collect(lambda: self._app.transcriber.validate(options, prefix="config.options."))
        encoding = errors.collect(
            lambda: encoding_from_proto(config.format.encoding, "config.format.encoding")
        )
        if encoding is None and config.format.encoding == audio_pb2.AUDIO_ENCODING_UNSPECIFIED:
            errors.add(
                "config.format.encoding",
                "config.format.encoding is required: LINEAR16 (with sample_rate_hertz) or WAV, FLAC, OGG_OPUS, MP3",
            )
        if config.format.channels not in (0, 1):
            errors.add(
                "config.format.channels",
                f"config.format.channels {config.format.channels}: send mono audio (1, or 0)",
            )
        errors.raise_if_any()
        assert encoding is not None  # raise_if_any refused the request otherwise
        decoder = open_stream_decoder(encoding, config.format.sample_rate_hertz)
        streams = self._app.live_streams
        if streams.active >= streams.limit:
            decoder.close()
            raise ResourceExhausted(
                f"{streams.active} live streams are running, the most this replica takes; retry in a few seconds",
                retry_after_seconds=5,
            )
        streams.active += 1
        try:
            # The whole stream runs on one model: a LoadModel that swaps in another meanwhile leaves it on this one.
            async with (
                self._app.models.use() as engine,
                contextlib.aclosing(self._live(requests, config, options, decoder, engine)) as responses,
            ):
                async for response in responses:
                    yield response
        finally:
            streams.active -= 1
            decoder.close()

    async def _live(
        self,
        requests: AsyncIterator[pb.StreamingTranscribeRequest],
        config: pb.StreamingConfig,
        options: RecognitionOptions,
        decoder: StreamDecoder,
        engine: WhisperEngine,
    ) -> AsyncGenerator[pb.StreamingTranscribeResponse, None]:
        transcriber = self._app.transcriber
        # The model must accept the options (language, task) before any audio is taken.
        engine.check_options(options, prefix="config.options.")
        language = options.language or ("en" if not engine.multilingual else "")
        live_settings = self._app.settings.live_settings(interim_results=config.interim_results)
        current: list[WhisperEngine] = []

        # Without a hint, the first pass that heard enough to be sure of the language fixes it for the rest of the
        # stream, so that later passes neither detect again nor flip to another language.
        detected = ""

        def recognize(audio: np.ndarray, prompt: str | None) -> list[Word]:
            nonlocal detected
            pass_options = live_pass_options(options, prompt, live_settings)
            if detected:
                pass_options = dataclasses.replace(pass_options, language=detected)
            transcript = current[-1].transcribe(audio, pass_options, batched=False)
            if (
                not language
                and not detected
                and audio.size >= _HEARD_FOR_LANGUAGE_SECONDS * SAMPLE_RATE
                and transcript.language_probability >= _SURE_OF_LANGUAGE
            ):
                detected = transcript.language
            return words_of(transcript)

        recognizer = StreamingRecognizer(recognize, live_settings)
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        reader = asyncio.ensure_future(_read_audio(requests, chunks))
        try:
            ended = False
            while not ended:
                data = [await _next_chunk(chunks, reader)]
                while not chunks.empty():  # everything that arrived during the last pass, in one go
                    data.append(chunks.get_nowait())
                if None in data:
                    ended = True
                    data = data[: data.index(None)]
                samples = decoder.feed(b"".join(item for item in data if item is not None))
                recognizer.feed(samples)
                if ended:
                    recognizer.feed(decoder.finish())
                step = recognizer.finish if ended else recognizer.step
                async with transcriber.engine_slot(engine):
                    current.append(engine)
                    results = await _in_thread(step)
                    current.clear()
                for result in results:
                    yield pb.StreamingTranscribeResponse(result=_live_result_to_proto(result))
            metrics.AUDIO_SECONDS.inc(recognizer.audio_seconds)
            yield pb.StreamingTranscribeResponse(
                summary=pb.StreamingSummary(
                    text=recognizer.text,
                    language=language or detected,
                    duration_seconds=recognizer.audio_seconds,
                )
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

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
