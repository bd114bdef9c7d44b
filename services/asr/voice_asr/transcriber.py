"""One transcription from validation to transcript: admission, a bounded number of concurrent transcriptions,
cancellation and timings.

How a request runs (:meth:`Transcriber.transcribe`):

1. :func:`validate` checks the options and the audio at once (one ``InvalidArgument`` listing every problem).
2. Admission: at most ``max_queue`` requests are waiting or running; one more gets ``ResourceExhausted`` at once,
   with a retry hint from the recent service times.
3. ``max_concurrent`` requests run at the same time; the rest wait FIFO (an asyncio semaphore). On a CPU one is
   right: CTranslate2 gives each call ``cpu_threads`` threads, and two calls on the same cores only take turns.
   With ``num_workers`` > 1 (more cores, or a GPU) the model runs that many calls in parallel.
   ``queue_wait_s`` is the time until a request started (including, on first use, the model load).
4. The engine runs in a worker thread (``asyncio.to_thread``): the event loop never blocks on CTranslate2.
5. Cancellation: when ``cancelled()`` turns true (polled on the event loop) or the calling task is cancelled, the
   request's stop flag is set; the engine checks it between segments. The slot is released only after the worker
   thread has ended, so a refused client never races a dying request.

The live streaming path uses the same :meth:`Transcriber.transcribe` (with ``batched=False`` for its short
windows), so it shares the admission and the model with unary requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from voice_asr.engine import TranscriptionStopped, WhisperEngine, whisper_languages
from voice_asr.transcript import (
    SAMPLE_RATE,
    RecognitionOptions,
    Transcript,
    TranscriptionResult,
    TranscriptionTimings,
)
from voice_common.cancellation import wait_through_cancellation
from voice_common.errors import ErrorList, ResourceExhausted, quoted
from voice_common.model_manager import ModelManager

# How often the waiting side polls ``cancelled()``.
CANCEL_POLL_SECONDS = 0.02
# Before any request has finished, the retry hint assumes a request takes this long.
INITIAL_SERVICE_SECONDS = 5.0
TASKS = ("transcribe", "translate")

__all__ = [
    "Transcriber",
    "TranscriptionLimits",
    "TranscriptionStopped",
    "validate",
]


@dataclass(frozen=True)
class TranscriptionLimits:
    # An hour: a long meeting. Decoded float32 16 kHz audio is 230 MB an hour, held while the request waits, so
    # max_audio_seconds * max_queue bounds the memory waiting requests take (about 1.8 GB here).
    max_audio_seconds: float = 3600.0
    max_queue: int = 8  # requests waiting or running; one more is refused
    max_concurrent: int = 1  # requests transcribed at the same time (see the module docstring)
    max_beam_size: int = 10
    # Whisper keeps at most 223 prompt tokens (half its text context) and drops the start of a longer prompt;
    # 1000 characters is a little over that in English and keeps a client from sending megabytes.
    max_prompt_chars: int = 1000
    max_hotwords_chars: int = 1000


def validate(
    options: RecognitionOptions,
    limits: TranscriptionLimits | None = None,
    *,
    audio: np.ndarray | None = None,
    languages: Collection[str] | None = None,
    prefix: str = "options.",
    audio_field: str = "audio",
) -> None:
    """Raise one InvalidArgument naming every bad field of ``options`` (and of ``audio``, when given).

    ``languages`` are the codes Whisper knows (default: all of them); whether the loaded model knows one is the
    engine's check (an English-only model knows only "en"). Field names are ``prefix`` + the option's name.
    """
    limits = limits or TranscriptionLimits()
    known = languages if languages is not None else whisper_languages()
    errors = ErrorList()
    language = (options.language or "").strip().lower()
    if language not in ("", "auto") and language not in known:
        errors.add(
            prefix + "language",
            f"language {quoted(options.language or '')} is not one Whisper knows; use a code such as 'en', 'de' or 'fr', or "
            "leave it unset to detect it",
        )
    if options.task not in TASKS:
        errors.add(prefix + "task", f"task {quoted(options.task)} must be one of {', '.join(TASKS)}")
    if not 1 <= options.beam_size <= limits.max_beam_size:
        errors.add(
            prefix + "beam_size",
            f"beam_size {options.beam_size} must be from 1 (greedy, fastest) to {limits.max_beam_size}",
        )
    if not 0.0 <= options.temperature <= 1.0:
        errors.add(
            prefix + "temperature",
            f"temperature {options.temperature:g} must be from 0 (greedy first, the default) to 1",
        )
    if options.initial_prompt and len(options.initial_prompt) > limits.max_prompt_chars:
        errors.add(
            prefix + "initial_prompt",
            f"the initial prompt has {len(options.initial_prompt)} characters; the most is "
            f"{limits.max_prompt_chars} (Whisper keeps only its last 223 tokens anyway)",
        )
    if options.hotwords and len(options.hotwords) > limits.max_hotwords_chars:
        errors.add(
            prefix + "hotwords",
            f"the hotwords have {len(options.hotwords)} characters; the most is {limits.max_hotwords_chars}",
        )
    if audio is not None:
        seconds = audio.size / SAMPLE_RATE
        if audio.size == 0:
            errors.add(audio_field, "the audio is empty; send the speech to transcribe")
        elif seconds > limits.max_audio_seconds:
            errors.add(
                audio_field,
                f"the audio is {seconds:.0f} s long; the most is {limits.max_audio_seconds:.0f} s, so split it "
                "over several requests",
            )
    errors.raise_if_any()


class Transcriber:
    def __init__(
        self,
        models: ModelManager[Any, WhisperEngine],
        limits: TranscriptionLimits | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        observe: Callable[[TranscriptionResult], None] | None = None,
        languages: Collection[str] | None = None,
    ) -> None:
        """``observe`` is called with every completed result (the metrics hook: ``voice_asr.metrics.observe``)."""
        self._models = models
        self._limits = limits or TranscriptionLimits()
        self._clock = clock
        self._observe = observe
        self._languages = frozenset(languages) if languages is not None else whisper_languages()
        self._slots = asyncio.Semaphore(self._limits.max_concurrent)
        self._depth = 0
        self._running = 0
        self._service_seconds = INITIAL_SERVICE_SECONDS

    @property
    def limits(self) -> TranscriptionLimits:
        return self._limits

    @property
    def models(self) -> ModelManager[Any, WhisperEngine]:
        return self._models

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not finished: waiting plus running."""
        return self._depth

    @property
    def running(self) -> int:
        """Requests whose worker thread is running now."""
        return self._running

    def retry_after_seconds(self) -> float:
        """When a refused client should try again: about the time for the queue ahead to drain."""
        rounds = max(1, self._depth) / self._limits.max_concurrent
        return float(min(60.0, max(1.0, math.ceil(self._service_seconds * rounds))))

    @asynccontextmanager
    async def engine_slot(self, held: WhisperEngine | None = None) -> AsyncIterator[WhisperEngine]:
        """One of the transcription slots and the loaded engine, for a caller that runs the engine itself in a
        worker thread (a live stream's recognition passes), so live passes and whole files share the same CPU
        budget. The caller must not leave the block before its thread is done with the engine. ``held``: an engine
        the caller holds (``models.use()``) for longer, e.g. a whole stream, which then stays on that model even
        if a LoadModel swaps in another."""
        async with (
            self._slots,
            self._models.use() if held is None else contextlib.nullcontext(held) as engine,
        ):
            self._running += 1
            try:
                yield engine
            finally:
                self._running -= 1

    def validate(
        self, options: RecognitionOptions, audio: np.ndarray | None = None, *, prefix: str = "options."
    ) -> None:
        """:func:`validate` with this transcriber's limits and languages."""
        validate(options, self._limits, audio=audio, languages=self._languages, prefix=prefix)

    async def transcribe(
        self,
        audio: np.ndarray,
        options: RecognitionOptions,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        batched: bool | None = None,
    ) -> TranscriptionResult:
        """Transcribe float32 mono 16 kHz ``audio``. ``batched`` None lets the engine pick by length.

        Raises InvalidArgument (bad options or audio, or options the model cannot honour), ResourceExhausted (the
        queue is full), Unavailable (no model), and :class:`TranscriptionStopped` when ``cancelled()`` turned true.
        """
        admitted = self._clock()
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        self.validate(options, audio)
        if self._depth >= self._limits.max_queue:
            raise ResourceExhausted(
                f"the ASR queue is full ({self._depth} requests waiting or running); retry in a few seconds",
                retry_after_seconds=self.retry_after_seconds(),
            )
        self._depth += 1
        try:
            # use(): loads the model on first use and keeps an idle unload away while the request runs.
            async with self._slots, self._models.use() as engine:
                engine.check_options(options, prefix="options.")
                started = self._clock()
                transcript = await self._run(engine, audio, options, cancelled, batched)
                ended = self._clock()
        finally:
            self._depth -= 1
        processing = ended - started
        self._service_seconds = 0.7 * self._service_seconds + 0.3 * processing
        duration = transcript.duration_seconds
        result = TranscriptionResult(
            transcript,
            TranscriptionTimings(
                queue_wait_s=max(0.0, started - admitted),
                processing_s=processing,
                real_time_factor=processing / duration if duration > 0 else 0.0,
            ),
        )
        if self._observe is not None:
            self._observe(result)
        return result

    async def _run(
        self,
        engine: WhisperEngine,
        audio: np.ndarray,
        options: RecognitionOptions,
        cancelled: Callable[[], bool],
        batched: bool | None,
    ) -> Transcript:
        stop = threading.Event()
        worker = asyncio.ensure_future(
            asyncio.to_thread(engine.transcribe, audio, options, stop.is_set, batched=batched)
        )
        self._running += 1
        try:
            while not worker.done():
                if cancelled():
                    stop.set()
                    break
                await asyncio.wait({worker}, timeout=CANCEL_POLL_SECONDS)
        finally:
            # Whatever ended the wait (the result, cancelled(), this task's cancellation, an error), the thread
            # must have let the model go before the slot is released.
            if not worker.done():
                stop.set()
            await wait_through_cancellation(worker)
            self._running -= 1
        return worker.result()  # raises what the engine raised (TranscriptionStopped when stopped)
