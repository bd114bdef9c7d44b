"""A live transcription (``StreamingTranscribe``) from its config to its summary: admission against the replica's
stream limit, the language the stream is held to, and the loop that takes the client's audio while passes run.

No grpc and no protobuf here: the servicer maps the config message to :class:`LiveStreamConfig` and the audio
messages to bytes, and maps the :class:`~voice_asr.live.LiveResult` and :class:`LiveSummary` this yields back.
Recognition itself (when to run a pass, what is final) is :class:`~voice_asr.live.StreamingRecognizer`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from voice_asr import metrics
from voice_asr.engine import WhisperEngine
from voice_asr.live import LiveResult, LiveSettings, StreamingRecognizer, pass_options, words_of
from voice_asr.stream_decoder import StreamDecoder, open_stream_decoder
from voice_asr.transcriber import Transcriber
from voice_asr.transcript import SAMPLE_RATE, RecognitionOptions, Transcript, Word
from voice_common.audio import AudioEncoding
from voice_common.cancellation import wait_through_cancellation
from voice_common.errors import ResourceExhausted
from voice_common.server.request_streams import next_item

T = TypeVar("T")

# A live stream without a language hint takes the language of the first pass that heard this much audio and is at
# least this sure of it. Whisper base took half a second of German for English.
_HEARD_FOR_LANGUAGE_SECONDS = 3.0
_SURE_OF_LANGUAGE = 0.5


@dataclass
class LiveStreams:
    """Live streams running now, against the replica's limit (each holds a decoder and a buffer of audio)."""

    limit: int
    active: int = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Counts one stream while the block runs; refuses it (RESOURCE_EXHAUSTED) when the replica is full."""
        if self.active >= self.limit:
            raise ResourceExhausted(
                f"{self.active} live streams are running, the most this replica takes; retry in a few seconds",
                retry_after_seconds=5,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


@dataclass(frozen=True)
class LiveStreamConfig:
    """What the client's first message fixes for the whole stream; already checked field by field."""

    options: RecognitionOptions
    encoding: AudioEncoding
    sample_rate_hertz: int  # LINEAR16's rate; 0 for a container format, whose header says
    interim_results: bool


@dataclass(frozen=True)
class LiveSummary:
    """The last thing a stream yields, after the client half-closed and the rest was recognized."""

    text: str
    language: str  # the hint, or what the stream was fixed to; "" when nothing fixed it
    duration_seconds: float


class StreamLanguage:
    """The language of a stream's passes: the client's hint, English for an English-only model, or else the first
    language a pass detected after hearing enough to be sure of it. Once fixed it holds for the rest of the stream,
    so that later passes neither detect again nor flip to another language."""

    def __init__(self, hint: str | None, *, multilingual: bool) -> None:
        self.hint = hint or ("en" if not multilingual else "")
        self.detected = ""

    @property
    def fixed(self) -> str:
        return self.hint or self.detected

    def options(self, options: RecognitionOptions) -> RecognitionOptions:
        """A pass's options with the detected language, once there is one (a hint is in them already)."""
        return dataclasses.replace(options, language=self.detected) if self.detected else options

    def heard(self, audio: np.ndarray, transcript: Transcript) -> None:
        """A pass over ``audio`` gave ``transcript``: fixes its language if nothing has yet and it was sure."""
        if (
            not self.fixed
            and audio.size >= _HEARD_FOR_LANGUAGE_SECONDS * SAMPLE_RATE
            and transcript.language_probability >= _SURE_OF_LANGUAGE
        ):
            self.detected = transcript.language


class LiveTranscriber:
    """Runs live streams on the transcriber's model and transcription slots, up to the replica's stream limit."""

    def __init__(
        self,
        transcriber: Transcriber,
        streams: LiveStreams,
        live_settings: Callable[[bool], LiveSettings],  # the recognizer's settings, given interim_results
    ) -> None:
        self._transcriber = transcriber
        self._streams = streams
        self._live_settings = live_settings

    async def transcribe(
        self, config: LiveStreamConfig, audio: AsyncIterable[bytes], *, options_field: str = "options."
    ) -> AsyncGenerator[LiveResult | LiveSummary, None]:
        """Results as they are heard, then the summary once ``audio`` has ended and the rest was recognized.

        ``options_field`` prefixes the field a refused option names (the model cannot translate, say). An error
        raised while reading ``audio`` ends the stream with that error.
        """
        decoder = open_stream_decoder(config.encoding, config.sample_rate_hertz)
        try:
            with self._streams.admit():
                # The whole stream runs on one model: a LoadModel that swaps in another meanwhile leaves it on this
                # one.
                async with (
                    self._transcriber.models.use() as engine,
                    contextlib.aclosing(self._run(config, audio, decoder, engine, options_field)) as events,
                ):
                    async for event in events:
                        yield event
        finally:
            decoder.close()

    async def _run(
        self,
        config: LiveStreamConfig,
        audio: AsyncIterable[bytes],
        decoder: StreamDecoder,
        engine: WhisperEngine,
        options_field: str,
    ) -> AsyncGenerator[LiveResult | LiveSummary, None]:
        options = config.options
        # The model must accept the options (language, task) before any audio is taken.
        engine.check_options(options, prefix=options_field)
        language = StreamLanguage(options.language, multilingual=engine.multilingual)
        live_settings = self._live_settings(config.interim_results)
        current: list[WhisperEngine] = []

        def recognize(samples: np.ndarray, prompt: str | None) -> list[Word]:
            transcript = current[-1].transcribe(
                samples, language.options(pass_options(options, prompt, live_settings)), batched=False
            )
            language.heard(samples, transcript)
            return words_of(transcript)

        recognizer = StreamingRecognizer(recognize, live_settings)
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        # The client's audio is read while a pass runs, so that the next pass takes everything that arrived.
        reader = asyncio.ensure_future(_read_audio(audio, chunks))
        try:
            ended = False
            while not ended:
                data = [await next_item(chunks, reader)]
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
                async with self._transcriber.engine_slot(engine):
                    current.append(engine)
                    results = await _in_thread(step)
                    current.clear()
                for result in results:
                    yield result
            metrics.AUDIO_SECONDS.inc(recognizer.audio_seconds)
            yield LiveSummary(
                text=recognizer.text, language=language.fixed, duration_seconds=recognizer.audio_seconds
            )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


async def _read_audio(audio: AsyncIterable[bytes], chunks: asyncio.Queue[bytes | None]) -> None:
    """Move the client's audio to ``chunks``; None once it has ended."""
    async for data in audio:
        if data:
            chunks.put_nowait(data)
    chunks.put_nowait(None)


async def _in_thread(function: Callable[[], T]) -> T:
    """``function()`` in a worker thread; if this task is cancelled meanwhile, wait for the thread to end anyway
    (it holds the engine and a transcription slot) and re-raise the cancellation afterwards."""
    worker = asyncio.ensure_future(asyncio.to_thread(function))
    await wait_through_cancellation(worker)
    return worker.result()
