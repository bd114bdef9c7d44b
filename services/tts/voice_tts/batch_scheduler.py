"""Continuous batching: one engine thread steps every running request's talker together, one frame at a time.

Why: a decoding step of the talker reads all its weights to make one frame; several requests stepped together
read them once, so on a GPU (memory-bound decoding) and on a CPU (per-step framework overhead) eight requests
cost far less than eight times one. See docs/tts-streaming.md for the figures.

How (the :class:`BatchScheduler` thread loop):

1. A request becomes a :class:`Job`; jobs wait FIFO in ``pending`` until the batch has room (``max_batch`` rows).
2. A job joins by starting its next text piece: the piece's prompt runs through the talker alone (its own KV
   cache; prompts differ in length), its first frame is sampled, and its cache joins the batch's cache,
   left-padded to a common length (:class:`TalkerBatch`). Each row keeps its own positions (the rotary position
   is the row's own length, not the padded one) and the attention mask hides the padding.
3. Each step runs the talker once for all rows, then each row samples its first code with its own processors and
   generator; the rows that did not stop share the code predictor's passes (:func:`residual_codes`). When a row's
   chunk comes due (:class:`ChunkCutter`), every row's undecoded frames go through one streaming-decoder pass (so
   rows that joined at different frames fall into step) and each request gets its audio.
4. A row whose piece ends (EOS, frame cap) or whose request stopped leaves the batch at once (its cache rows are
   dropped), and its request's next piece, if any, joins as in 2. Columns that only padding uses are trimmed.

Determinism: a request alone in the batch computes exactly what ``Utterance`` computes alone (same
operations, same shapes), so a seed reproduces its audio bit for bit. A request batched with others samples from
its own generator in the same order; on CPU in float32 its codes came out identical to the solo run (tested),
and chunks decoded in one pass with other requests' chunks differ from solo decoding by ~1e-5 (rounding of the
batched, padded convolutions and attention). On other hardware batched matrix products may round differently in
the last bits, so with sampling a rare near-tie could pick another token: for bit-exact reproducibility run with
``max_batch=1``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from transformers import DynamicCache

from voice_common.audio.encoding import StreamingEncoder
from voice_tts.chunk_decoding import ChunkCutter, decode_chunks
from voice_tts.frame_generation import Utterance, residual_codes
from voice_tts.synthesis_types import StopReason, SynthesisLimits, SynthesisRequest, piece_seed
from voice_tts.text_segments import split_text
from voice_tts.time_stretch import StreamingTimeStretcher

log = logging.getLogger(__name__)


class UtteranceFactory(Protocol):
    def __call__(
        self,
        model: Any,
        text: str,
        language: str,
        prompt: Any,
        *,
        seed: int,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
        repetition_penalty: float | None,
        max_new_tokens: int | None,
    ) -> Utterance: ...


@dataclass
class Chunk:
    audio: bytes  # encoded bytes (may be empty: an encoder can hold samples back)
    samples: int  # model-rate samples they cover


class Done:
    """The last item a job pushes, whatever happened."""


DONE = Done()


@dataclass
class JobOutcome:
    pcm: np.ndarray  # float32 mono at the model's rate
    sample_rate: int
    stop_reason: StopReason
    pieces: int
    frames: int
    started_at: float  # when the job joined the batch (the end of its queue wait)


@dataclass(eq=False)
class Job:
    """One request inside the scheduler; only the engine thread touches its state after submit()."""

    model: Any
    request: SynthesisRequest
    language: str  # the model's language name
    stop: threading.Event
    push: Callable[[Chunk | Done], None]
    threads: int  # torch threads of the service (OpenMP keeps the count per OS thread)
    outcome: concurrent.futures.Future[JobOutcome] = field(default_factory=concurrent.futures.Future)
    pieces: list[str] = field(default_factory=list)
    next_piece: int = 0
    utterance: Utterance | None = None
    cutter: ChunkCutter | None = None
    encoder: StreamingEncoder | None = None
    stretcher: StreamingTimeStretcher | None = None  # None at speed 1: the model's audio as it is
    audio: list[np.ndarray] = field(default_factory=list)
    reasons: list[StopReason] = field(default_factory=list)
    frames: int = 0
    sample_rate: int = 24000
    started_at: float = 0.0


class TalkerBatch:
    """The talker's KV cache for several rows of different lengths, left-padded to one length, and their mask."""

    def __init__(self) -> None:
        self.rows: list[Utterance] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def length(self) -> int:
        return int(self._mask.shape[1])

    @torch.inference_mode()
    def add(self, row: Utterance) -> None:
        """Take over ``row``'s KV cache (after its ``begin`` and first frame) as a new row of the batch."""
        own = row.take_cache()
        own_length = own.get_seq_length()
        mask = torch.ones((1, own_length), dtype=torch.long, device=row.device)
        if self._cache is None or not self.rows:
            self._cache, self._mask, self.rows = own, mask, [row]
            return
        length = max(self.length, own_length)
        merged = DynamicCache()
        for index, (ours, theirs) in enumerate(zip(self._cache.layers, own.layers, strict=True)):
            (our_keys, our_values), (their_keys, their_values) = _tensors(ours), _tensors(theirs)
            keys = torch.cat([_left_pad(our_keys, length), _left_pad(their_keys, length)], dim=0)
            values = torch.cat([_left_pad(our_values, length), _left_pad(their_values, length)], dim=0)
            merged.update(keys, values, index)
        self._mask = torch.cat([_left_pad(self._mask, length, dim=1), _left_pad(mask, length, dim=1)], dim=0)
        self._cache = merged
        self.rows.append(row)

    @torch.inference_mode()
    def remove(self, leaving: set[Utterance]) -> None:
        keep = [i for i, row in enumerate(self.rows) if row not in leaving]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not self.rows or self._cache is None:
            self._cache, self._mask = None, torch.zeros((0, 0), dtype=torch.long)
            return
        index = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self._mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row cost attention time for nothing: drop them.
        used = self._mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else 0
        trimmed = DynamicCache()
        for layer_index, layer in enumerate(self._cache.layers):
            keys, values = _tensors(layer)
            trimmed.update(
                keys.index_select(0, index)[:, :, start:],
                values.index_select(0, index)[:, :, start:],
                layer_index,
            )
        self._cache = trimmed
        self._mask = self._mask[:, start:]

    @torch.inference_mode()
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed every row's last frame: the last hidden states (B, 1, H) and logits (B, 1, V)."""
        rows = self.rows
        assert rows and self._cache is not None
        device = rows[0].device
        embeds = torch.cat([row.next_embed for row in rows if row.next_embed is not None], dim=0)
        positions = (
            torch.tensor([row.position for row in rows], device=device).view(1, -1, 1).expand(3, -1, 1)
        )
        self._mask = torch.cat(
            [self._mask, torch.ones((len(rows), 1), dtype=torch.long, device=device)], dim=1
        )
        hidden, logits = rows[0].speech_model.talker_step(embeds, self._mask, positions, self._cache)
        for row in rows:
            row.position += 1
        return hidden, logits


def _tensors(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values (B, heads, T, head_dim); every layer is filled after a forward pass."""
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def _left_pad(tensor: torch.Tensor, length: int, dim: int = 2) -> torch.Tensor:
    """Zeros in front of ``tensor`` along ``dim`` up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class BatchScheduler:
    """Runs submitted jobs in one engine thread, batching up to ``limits.max_batch`` of them per talker step."""

    def __init__(
        self,
        limits: SynthesisLimits,
        factory: UtteranceFactory,
        clock: Callable[[], float] = time.perf_counter,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        self._limits = limits
        self._factory = factory
        self._clock = clock
        self._on_step = on_step
        self._pending: deque[Job] = deque()
        self._active: list[Job] = []
        self._batch = TalkerBatch()
        self._model: Any = None
        self._threads = 0
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def running(self) -> int:
        """Jobs in the batch now (the engine thread's view; for status and tests)."""
        return len(self._active)

    def submit(self, job: Job) -> None:
        with self._condition:
            if self._closed:
                raise RuntimeError("the TTS scheduler is closed")
            job.pieces = split_text(job.request.text, self._limits.max_piece_chars)
            self._pending.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tts-engine", daemon=True)
                self._thread.start()
            self._condition.notify()

    def wake(self) -> None:
        """Make the engine look at its jobs now (a job's stop flag was set while it waited)."""
        with self._condition:
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join()

    # -- the engine thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while self._round():
            pass

    def _round(self) -> bool:
        """Admit what fits, then one batch step; False once closed. (A method, not a loop body: no local keeps a
        finished job, and its encoder, alive while the thread waits.)"""
        with self._condition:
            while not self._closed and not self._active and not self._admissible():
                self._condition.wait()
            if self._closed:
                leftover = [*self._active, *self._pending]
                self._pending.clear()
                for job in leftover:
                    self._fail(job, RuntimeError("the TTS service is shutting down"))
                return False
            joining: list[Job] = []
            while self._admissible() and len(self._active) + len(joining) < self._limits.max_batch:
                joining.append(self._pending.popleft())
        for job in joining:
            self._join(job)
        self._drop_stopped()
        if self._active:
            self._step()
        return True

    def _admissible(self) -> bool:
        """Whether the first pending job can join now: same model as the batch, or the batch is empty."""
        if not self._pending:
            return False
        job = self._pending[0]
        if job.stop.is_set():
            return True  # it joins only to finish at once
        return not self._active or job.model is self._model

    def _join(self, job: Job) -> None:
        job.started_at = self._clock()
        if job.threads != self._threads:
            torch.set_num_threads(job.threads)
            self._threads = job.threads
        if not self._active:
            self._model = job.model
        self._active.append(job)
        self._advance(job)

    def _advance(self, job: Job) -> None:
        """Start the job's next piece (prompt + first frame) and put it into the batch, or finish the job."""
        try:
            while job.next_piece < len(job.pieces) and not job.stop.is_set():
                index = job.next_piece
                job.next_piece += 1
                request = job.request
                utterance = self._factory(
                    job.model,
                    job.pieces[index],
                    job.language,
                    request.prompt,
                    seed=piece_seed(request.seed, index),
                    temperature=request.temperature,
                    top_k=request.top_k,
                    top_p=request.top_p,
                    repetition_penalty=request.repetition_penalty,
                    max_new_tokens=request.max_new_tokens,
                )
                job.utterance = utterance
                job.sample_rate = utterance.sample_rate
                if job.encoder is None:
                    job.encoder = StreamingEncoder(
                        request.encoding, utterance.sample_rate, request.sample_rate
                    )
                    if request.speed != 1:
                        job.stretcher = StreamingTimeStretcher(request.speed, utterance.sample_rate)
                job.cutter = ChunkCutter(
                    utterance,
                    first_chunk_frames=self._limits.first_chunk_frames,
                    chunk_frames=self._limits.chunk_frames,
                )
                hidden, logits = utterance.begin()
                self._frame(job, hidden, logits)
                if not utterance.done:
                    self._batch.add(utterance)
                    return
                self._end_pieces([job])
            self._finish(job)
        except Exception as error:  # this job's failure (bad prompt, decoder error) is its own
            self._fail(job, error)

    def _frame(self, job: Job, hidden: torch.Tensor, logits: torch.Tensor) -> None:
        """One frame for a job alone (its first): sample, residual codes, and the audio if a chunk is due."""
        utterance, cutter = job.utterance, job.cutter
        assert utterance is not None and cutter is not None
        first = utterance.choose_first(logits)
        if first is None:
            return
        rest, summed = residual_codes([utterance], hidden, first)
        utterance.accept(first, rest, summed)
        span = cutter.due()
        if span is not None:
            self._decode_and_emit([(job, span)])

    def _decode_and_emit(self, due: list[tuple[Job, tuple[int, int]]]) -> None:
        """Decode the jobs' due chunks in one pass of the streaming decoder (each row continues its own decoder
        state) and hand each its audio.

        Every other running job's frames made so far go through the same pass. Requests join at different frames
        (each arrives after its own profile read), so their chunks would otherwise come due at different steps, a
        decoder pass each; decoded together once, they fall into step and share every later pass. A job decoded
        early sends its audio sooner than its own chunk would have, and the same audio (the decoder is exact
        whatever the chunking)."""
        if not due:
            return
        chosen = {id(job) for job, _span in due}
        early = [
            (job, span)
            for job in self._active
            if id(job) not in chosen and job.cutter is not None and not job.stop.is_set()
            if (span := job.cutter.pending()) is not None
        ]
        rows = [*due, *early]
        cutters = []
        for job, span in rows:
            assert job.cutter is not None
            cutters.append((job.cutter, span))
        audio = decode_chunks(cutters)
        for (job, _span), samples in zip(rows, audio, strict=True):
            self._emit(job, samples)

    @staticmethod
    def _emit(job: Job, samples: np.ndarray) -> None:
        """Hand the job's next model audio on: stretched to its speed (what is final of it yet), then encoded. The
        stretch runs here in the engine thread, like the encoding: the event loop never does CPU work."""
        assert job.encoder is not None
        if job.stretcher is not None:
            samples = job.stretcher.process(samples)
        job.audio.append(samples)
        job.push(Chunk(job.encoder.encode(samples), int(samples.size)))

    def _end_pieces(self, jobs: list[Job]) -> None:
        """When pieces end: their last audio (unless stopped, decoded together), frames and stop reasons."""
        due: list[tuple[Job, tuple[int, int]]] = []
        for job in jobs:
            assert job.utterance is not None and job.cutter is not None
            if job.stop.is_set():
                job.utterance.stop()
            span = job.cutter.rest_due()
            if span is not None:
                due.append((job, span))
        self._decode_and_emit(due)
        for job in jobs:
            assert job.utterance is not None
            job.frames += job.utterance.frames_generated
            job.reasons.append(job.utterance.stop_reason or "stopped")
            job.utterance = job.cutter = None

    def _step(self) -> None:
        rows = list(self._batch.rows)
        jobs = {id(job.utterance): job for job in self._active if job.utterance is not None}
        try:
            if self._on_step is not None:
                self._on_step(len(rows))
            hidden, logits = self._batch.step()
            going: list[int] = []
            firsts: list[torch.Tensor] = []
            for i, row in enumerate(rows):
                first = row.choose_first(logits[i : i + 1])
                if first is not None:
                    going.append(i)
                    firsts.append(first)
            due: list[tuple[Job, tuple[int, int]]] = []
            if going:
                index = torch.tensor(going, device=hidden.device)
                rest, summed = residual_codes(
                    [rows[i] for i in going], hidden.index_select(0, index), torch.cat(firsts, dim=0)
                )
                for k, i in enumerate(going):
                    rows[i].accept(firsts[k], rest[k : k + 1], summed[k : k + 1])
                    job = jobs[id(rows[i])]
                    assert job.cutter is not None
                    span = job.cutter.due()
                    if span is not None:
                        due.append((job, span))
            self._decode_and_emit(due)
            ended = [row for row in rows if row.done]
            if ended:
                self._batch.remove(set(ended))
                self._end_pieces([jobs[id(row)] for row in ended])
        except Exception as error:  # the batch as a whole failed: every job in it fails with the same error
            log.exception("TTS batch step failed")
            for job in list(self._active):
                self._fail(job, error)
            return
        for row in ended:
            self._advance(jobs[id(row)])

    def _drop_stopped(self) -> None:
        """Jobs whose client has gone leave the batch before the next step (a stop costs at most one frame)."""
        stopped = [job for job in self._active if job.stop.is_set()]
        if not stopped:
            return
        self._batch.remove({job.utterance for job in stopped if job.utterance is not None})
        try:
            self._end_pieces([job for job in stopped if job.utterance is not None])
        except Exception as error:
            for job in stopped:
                self._fail(job, error)
            return
        for job in stopped:
            try:
                self._finish(job)
            except Exception as error:
                self._fail(job, error)

    def _finish(self, job: Job) -> None:
        stopped = job.stop.is_set() or "stopped" in job.reasons
        try:
            if job.encoder is not None:
                if stopped:
                    job.encoder.close()
                else:
                    if job.stretcher is not None:
                        rest = job.stretcher.flush()
                        job.audio.append(rest)
                        job.push(Chunk(job.encoder.encode(rest), int(rest.size)))
                    job.push(Chunk(job.encoder.flush(), 0))
        finally:
            job.encoder = None
            job.stretcher = None
            self._leave(job)
        reason: StopReason = (
            "stopped" if stopped else "max_new_tokens" if "max_new_tokens" in job.reasons else "eos"
        )
        pcm = np.concatenate(job.audio) if job.audio else np.zeros(0, dtype=np.float32)
        job.outcome.set_result(
            JobOutcome(
                pcm.astype(np.float32, copy=False),
                job.sample_rate,
                reason,
                len(job.reasons),
                job.frames,
                job.started_at,
            )
        )

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.utterance is not None:
            self._batch.remove({job.utterance})
            job.utterance.stop()
            job.frames += job.utterance.frames_generated
            job.reasons.append(job.utterance.stop_reason or "stopped")
            job.utterance = None
        if job.encoder is not None:
            job.encoder.close()
            job.encoder = None
        job.stretcher = None
        self._leave(job)
        if not job.outcome.done():
            job.outcome.set_exception(error)

    def _leave(self, job: Job) -> None:
        if job in self._active:
            self._active.remove(job)
        if not self._active:
            # An empty batch belongs to no model: holding this one would keep a model that LoadModel replaced (or
            # UnloadModel dropped) in memory after its last request.
            self._model = None
        job.push(DONE)
