"""One text-to-speech request from validation to encoded audio: admission, one-at-a-time scheduling, long text,
streaming encoding, cancellation and timings.

How a request runs (:meth:`SynthesisEngine.stream`):

1. :func:`~voice_tts.synthesis_types.validate` checks every field at once (one ``InvalidArgument`` listing all problems).
2. Admission: at most ``max_queue`` requests are waiting or running; one more gets ``ResourceExhausted`` at once,
   with a retry hint from the recent service times.
3. Requests are batched: the :class:`~voice_tts.batch_scheduler.BatchScheduler` steps up to ``max_batch``
   requests through the model together, frame by frame (continuous batching: a request joins at the next frame
   and leaves when it ends); the rest wait FIFO. ``queue_wait_s`` is the time until a request joined (including,
   on first use, the model load). ``max_batch=1`` runs requests one at a time.
4. Long text is cut with :func:`~voice_tts.text_segments.split_text` into pieces of at most ``max_piece_chars``;
   the pieces are spoken one after another with the same voice prompt, each as one
   :class:`~voice_tts.frame_generation.Utterance`. Piece ``i`` is sampled with seed
   :func:`~voice_tts.synthesis_types.piece_seed` ``(seed, i) = (seed + i) mod 2**64``, so a request is
   reproducible from its seed and a single-piece request samples exactly as ``Utterance(seed=seed)``.
   ``max_new_tokens`` caps each piece's frames.
5. Generation, decoding and encoding run in the scheduler's engine thread (the event loop never blocks on torch
   or the codec); it hands encoded bytes to the event loop with ``loop.call_soon_threadsafe``. One
   :class:`~voice_common.audio.encoding.StreamingEncoder` per request encodes and resamples the audio, so the
   concatenated events are one valid stream in the requested format.
6. Cancellation: when the consumer stops (``aclose()``, task cancellation, or ``cancelled()`` turning true, which
   is polled on the event loop), the request's stop flag is set; the engine checks it before every batch step, so
   generation ends within a frame. The admission slot is released only after the engine has let the request go,
   so a refused client never races a dying request. A stream dropped without ``aclose()`` is closed the same way
   by asyncio's async-generator finalizer, a little later.

The engine does not wait for a slow consumer (no back-pressure): the backlog is bounded by the request's own
length (``max_text_chars`` and ``max_new_tokens``), and a stalled client would otherwise stall every request in
its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import torch

from voice_common.cancellation import wait_through_cancellation
from voice_common.errors import InvalidArgument, ResourceExhausted
from voice_tts.batch_scheduler import BatchScheduler, Chunk, Done, Job, JobOutcome, UtteranceFactory
from voice_tts.frame_generation import Utterance
from voice_tts.model_manager import ModelManager
from voice_tts.synthesis_types import (
    SynthesisEvent,
    SynthesisLimits,
    SynthesisRequest,
    SynthesisResult,
    model_language,
    validate,
)
from voice_tts.talker_prompt import check_language

# How often the consumer side polls ``cancelled()`` while it waits for audio.
CANCEL_POLL_SECONDS = 0.02
# Before any request has finished, the retry hint assumes a request takes this long.
INITIAL_SERVICE_SECONDS = 2.0


class SynthesisStream:
    """The events of one request (an async iterator); ``result`` is set once the request has ended.

    Iterate it with ``async for``; stop early with :meth:`aclose` (or ``contextlib.aclosing``), which stops the
    worker within a frame and frees the model slot. Errors (validation, queue full, model unavailable) are raised
    by the first ``__anext__``.
    """

    def __init__(self, start: Callable[[SynthesisStream], AsyncGenerator[SynthesisEvent, None]]) -> None:
        self.result: SynthesisResult | None = None
        self._events = start(self)

    def __aiter__(self) -> SynthesisStream:
        return self

    async def __anext__(self) -> SynthesisEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> SynthesisStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


class SynthesisEngine:
    """Runs requests on the model: admission, batching, streaming encoding and cancellation (module docstring)."""

    def __init__(
        self,
        models: ModelManager,
        limits: SynthesisLimits | None = None,
        clock: Callable[[], float] = time.perf_counter,
        *,
        factory: UtteranceFactory = Utterance,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self._models = models
        self._limits = limits or SynthesisLimits()
        self._clock = clock
        self._scheduler = BatchScheduler(self._limits, factory, clock, on_step)
        self._depth = 0
        self._service_seconds = INITIAL_SERVICE_SECONDS

    @property
    def limits(self) -> SynthesisLimits:
        return self._limits

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not finished: waiting for the model plus running."""
        return self._depth

    @property
    def running(self) -> int:
        """Requests in the batch now."""
        return self._scheduler.running

    def retry_after_seconds(self) -> float:
        """When a refused client should try again: about the time for a batch's worth of requests to finish."""
        return float(min(60.0, max(1.0, math.ceil(self._service_seconds))))

    def close(self) -> None:
        """Stop the engine thread (requests still inside fail); for shutdown."""
        self._scheduler.close()

    def stream(
        self,
        request: SynthesisRequest,
        *,
        model: Any = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> SynthesisStream:
        """The request's audio as it is made; nothing happens until the stream is iterated.

        ``model``: one the caller holds (``ModelManager.lease``) from before it made ``request.prompt`` until the
        stream ends, so the prompt and the speech come from one model even if a LoadModel swaps in another
        meanwhile; None: the manager's serving model, held for the stream."""
        started = self._clock()
        return SynthesisStream(lambda holder: self._run(request, model, cancelled, started, holder))

    async def synthesize(self, request: SynthesisRequest) -> tuple[bytes, SynthesisResult]:
        """The whole encoded file and the result (for unary calls)."""
        stream = self.stream(request)
        parts = [event.audio async for event in stream]
        assert stream.result is not None
        return b"".join(parts), stream.result

    async def _run(
        self,
        request: SynthesisRequest,
        held: Any,
        cancelled: Callable[[], bool],
        started: float,
        holder: SynthesisStream,
    ) -> AsyncGenerator[SynthesisEvent, None]:
        validate(request, self._limits)
        if self._depth >= self._limits.max_queue:
            raise ResourceExhausted(
                f"the TTS queue is full ({self._depth} waiting); retry in a few seconds",
                retry_after_seconds=self.retry_after_seconds(),
            )
        self._depth += 1
        try:
            # use(): loads the model on first use and keeps an idle unload away while the request runs.
            async with self._models.use() if held is None else contextlib.nullcontext(held) as model:
                language = model_language(request.language)
                assert language is not None  # validated
                try:
                    check_language(model, language)
                except ValueError as error:
                    raise InvalidArgument(str(error), field="language") from error
                events = self._generate(model, request, language, cancelled, started, holder)
                # aclosing: an early stop must stop the job before the admission slot is released.
                async with aclosing(events):
                    async for event in events:
                        yield event
        finally:
            self._depth -= 1

    async def _generate(
        self,
        model: Any,
        request: SynthesisRequest,
        language: str,
        cancelled: Callable[[], bool],
        started: float,
        holder: SynthesisStream,
    ) -> AsyncGenerator[SynthesisEvent, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | Done] = asyncio.Queue()

        def push(item: Chunk | Done) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        # OpenMP keeps its thread count per OS thread: the engine thread takes the service's count, since a
        # different count changes float sums, so the same seed would not give the same audio.
        job = Job(model, request, language, threading.Event(), push, torch.get_num_threads())
        self._scheduler.submit(job)
        outcome_future = asyncio.wrap_future(job.outcome)
        first_audio: float | None = None
        pending_samples = 0
        try:
            while True:
                if cancelled():
                    job.stop.set()
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), CANCEL_POLL_SECONDS)
                except TimeoutError:
                    continue
                if isinstance(item, Done):
                    break
                pending_samples += item.samples
                if item.audio:
                    if first_audio is None:
                        first_audio = self._clock()
                    event = SynthesisEvent(item.audio, pending_samples)
                    pending_samples = 0
                    yield event
            if job.stop.is_set():
                return
            await outcome_future  # raises what the job raised
            if pending_samples:
                yield SynthesisEvent(b"", pending_samples)
        finally:
            job.stop.set()
            self._scheduler.wake()
            outcome = await _join(outcome_future)
            ended = self._clock()
            if outcome is not None:
                service = ended - outcome.started_at
                self._service_seconds = 0.7 * self._service_seconds + 0.3 * service
                duration = outcome.pcm.size / outcome.sample_rate
                holder.result = SynthesisResult(
                    seed=request.seed,
                    duration_seconds=duration,
                    time_to_first_audio_s=0.0 if first_audio is None else first_audio - started,
                    total_s=ended - started,
                    queue_wait_s=max(0.0, outcome.started_at - started),
                    real_time_factor=service / duration if duration > 0 else 0.0,
                    stop_reason=outcome.stop_reason,
                    pcm=outcome.pcm,
                    sample_rate=outcome.sample_rate,
                    pieces=outcome.pieces,
                    frames=outcome.frames,
                )


async def _join(outcome: asyncio.Future[JobOutcome]) -> JobOutcome | None:
    """Wait for the engine to let the job go, even if this task is cancelled meanwhile (cancellation is
    re-raised afterwards); its outcome, or None if it failed."""
    await wait_through_cancellation(outcome)
    if outcome.cancelled() or outcome.exception() is not None:
        return None
    return outcome.result()
