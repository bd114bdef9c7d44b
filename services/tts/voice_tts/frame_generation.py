"""Frame-by-frame Qwen3-TTS voice cloning: one request's state while it streams 24 kHz audio frame by frame.

``qwen_tts``'s ``generate_voice_clone`` runs ``talker.generate`` to the end and decodes everything at once. An
:class:`Utterance` drives the same modules by hand, one codec frame (12.5 Hz, 1920 samples at 24 kHz) at a time:

1. its talker prompt is built as the package builds it (:func:`voice_tts.talker_prompt.build_prefill`);
2. it steps the talker with its own ``DynamicCache``, samples the first code of each frame with transformers'
   logits processors (repetition penalty, EOS blocked for ``min_new_tokens``, special ids suppressed, temperature,
   top-k, top-p), has the code predictor sample the remaining code groups step by step (the same processors
   ``code_predictor.generate`` would use; :class:`voice_tts.frame_sampling.FrameSampler`), and builds the next
   input embedding as ``Qwen3TTSTalkerForConditionalGeneration.forward`` does;
3. audio is decoded in chunks by the streaming decoder, each frame once, continuing the request's own decoder
   state, so the chunks join into what one decode of all the frames gives (:mod:`voice_tts.chunk_decoding`).

The model's parts (talker, code predictor, decoder) are one :class:`voice_tts.speech_model.SpeechModel` shared by
every request; everything per request (KV cache, sampler and its generator, codes, positions) lives here.

Sampling uses a private ``torch.Generator`` seeded per request, so concurrent requests stay deterministic. With
``torch.manual_seed(seed)`` the package's ``generate_voice_clone`` draws the same numbers in the same order, so
it yields the same codes (checked in the tests).

Semantics that differ from the package:

* ``max_new_tokens`` here is the most **frames** generated. The package's ``max_new_tokens=N`` gives at most
  ``N - 1`` frames (the last first code sampled never gets its residual codes); ``None`` uses the package's
  default (``generate_config.json``'s ``max_new_tokens``, else 2048) minus one, the same frame cap.
* ``temperature=0`` means greedy (the package wants ``do_sample=False``); the code predictor then is greedy too,
  unless ``subtalker_temperature`` is given.

Threading: this code never touches ``talker.rope_deltas`` (the package stores it on the module during prefill;
here position ids are passed explicitly: for a batch of one without padding, the 3-D mrope position is the cache
position). The model weights are only read, so several utterances may share one model from several threads; they
then compete for the same CPU cores. Each generator must be consumed by one thread at a time; grad mode is
switched off inside every step, never across a ``yield``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from transformers import DynamicCache

from voice_tts.chunk_decoding import ChunkCutter, decode_frames
from voice_tts.frame_sampling import (
    DEFAULT_MIN_NEW_TOKENS,
    FrameSampler,
    SamplingParams,
    default_max_frames,
    resolve_sampling,
)
from voice_tts.qwen import Qwen3TTSModel, VoiceClonePromptItem
from voice_tts.speech_model import SpeechModel
from voice_tts.synthesis_types import StopReason
from voice_tts.talker_prompt import build_prefill


def _never() -> bool:
    return False


def residual_codes(
    rows: list[Utterance], past_hidden: torch.Tensor, first: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual codes of several utterances' frames, sharing the code predictor's passes
    (:meth:`SpeechModel.residual_codes`; the utterances share one model): codes (B, G-1) and sums (B, 1, H)."""
    return rows[0].speech_model.residual_codes([row.sampler for row in rows], past_hidden, first)


class Utterance:
    """One text piece spoken in a cloned voice: generates its codec frames one at a time and decodes them in
    chunks. (A request of the service is one or more of these: :mod:`voice_tts.synthesis_engine`.)

    Single use: call exactly one of :meth:`frames`, :meth:`stream` or :meth:`synthesize_whole` (or iterate
    :meth:`frames` and then call :meth:`decode_all`). ``frames_generated``, ``codes`` and ``stop_reason`` show
    the progress at any time.
    """

    def __init__(
        self,
        model: Qwen3TTSModel,
        text: str,
        language: str,
        prompt: VoiceClonePromptItem,
        *,
        seed: int,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        subtalker_temperature: float | None = None,
        subtalker_top_k: int | None = None,
        subtalker_top_p: float | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = DEFAULT_MIN_NEW_TOKENS,
    ) -> None:
        self.model = model
        self.params: SamplingParams = resolve_sampling(
            model,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            subtalker_temperature=subtalker_temperature,
            subtalker_top_k=subtalker_top_k,
            subtalker_top_p=subtalker_top_p,
        )
        self.max_frames = default_max_frames(model) if max_new_tokens is None else max_new_tokens
        if self.max_frames < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if min_new_tokens < 0:
            raise ValueError("min_new_tokens must be >= 0")
        self.prefill = build_prefill(model, text, language, prompt)

        self.speech_model = SpeechModel.of(model)
        parts = self.speech_model
        self.num_groups: int = parts.num_groups
        self.eos_id: int = parts.eos_id
        self.samples_per_frame: int = parts.samples_per_frame
        self.sample_rate: int = parts.sample_rate
        self.device: torch.device = parts.device
        self.sampler = FrameSampler(
            self.params,
            seed=seed,
            device=self.device,
            eos_id=self.eos_id,
            vocab_size=parts.vocab_size,
            min_new_tokens=min_new_tokens,
        )

        self._codes = torch.zeros((self.max_frames, self.num_groups), dtype=torch.long, device=self.device)
        self._cache = DynamicCache()
        self.frames_generated = 0
        self.stop_reason: StopReason | None = None
        self._started = False
        self.position = 0  # the talker's next cache position (prompt length + frames fed back)
        self.next_embed: torch.Tensor | None = None  # (1, 1, H): the talker input carrying the last frame

    # -- generation ---------------------------------------------------------------------------------------------

    @property
    def codes(self) -> torch.Tensor:
        """The frames generated so far: (frames, groups), long, on the model's device."""
        return self._codes[: self.frames_generated]

    @torch.inference_mode()
    def _talker_forward(self, embeds: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the talker over ``embeds`` at cache positions ``start...``: (last hidden (1,1,H), logits)."""
        length = embeds.shape[1]
        positions = torch.arange(start, start + length, device=self.device).view(1, 1, -1).expand(3, 1, -1)
        attention_mask = torch.ones((1, start + length), dtype=torch.long, device=self.device)
        return self.speech_model.talker_step(embeds, attention_mask, positions, self._cache)

    def frames(self, should_stop: Callable[[], bool] = _never) -> Iterator[torch.Tensor]:
        """Generate frames one at a time, yielding each frame's codes (groups,) as soon as it exists.

        ``should_stop()`` is checked before every frame (before the talker step that frame needs), so a stop
        takes effect within one frame's compute. Ends on EOS, after ``max_new_tokens`` frames, or on a stop.
        """
        if self._started:
            raise RuntimeError("an Utterance runs once; make a new one")
        self._started = True
        try:
            yield from self._frames(should_stop)
        finally:
            self._cache = DynamicCache()  # frees the talker's KV cache on the end, a stop, or close()

    def _frames(self, should_stop: Callable[[], bool]) -> Iterator[torch.Tensor]:
        if should_stop():
            self.stop_reason = "stopped"
            return
        hidden, logits = self.begin()
        while True:
            if self.frames_generated:
                if should_stop():
                    self.stop_reason = "stopped"
                    return
                assert self.next_embed is not None
                hidden, logits = self._talker_forward(self.next_embed, self.position)
                self.position += 1
            first = self.choose_first(logits)
            if first is None:
                return
            rest, summed = residual_codes([self], hidden, first)
            yield self.accept(first, rest, summed)
            if self.done:
                return

    # -- step primitives (shared by frames() and the batch scheduler) --------------------------------------------

    def begin(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the talker over the prompt (this utterance's own KV cache): the last hidden state and logits."""
        if self.position:
            raise RuntimeError("begin() runs once")
        self._started = True
        hidden, logits = self._talker_forward(self.prefill.inputs_embeds, 0)
        self.position = self.prefill.inputs_embeds.shape[1]
        return hidden, logits

    @property
    def done(self) -> bool:
        """Whether generation has ended (EOS, the frame cap, or a stop)."""
        if self.stop_reason is None and self.frames_generated >= self.max_frames:
            self.stop_reason = "max_new_tokens"
        return self.stop_reason is not None

    @torch.inference_mode()
    def choose_first(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Sample the next frame's first code (1, 1) from the talker's logits (1, T, V); None at EOS."""
        first = self.sampler.first_code(logits)
        if int(first) == self.eos_id:
            self.stop_reason = "eos"
            return None
        return first

    @torch.inference_mode()
    def accept(self, first: torch.Tensor, rest: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
        """Record a frame (first code (1, 1), residual codes (1, G-1), their embeddings' sum (1, 1, H)) and build
        the talker input that carries it (as the talker's forward does); the frame's codes (groups,)."""
        index = self.frames_generated
        trailing = self.prefill.trailing_text_hidden
        if index < trailing.shape[1]:
            self.next_embed = summed + trailing[:, index].unsqueeze(1)
        else:
            self.next_embed = summed + self.prefill.tts_pad_embed
        self._codes[index, 0] = first[0, 0]
        self._codes[index, 1:] = rest[0]
        self.frames_generated = index + 1
        return self._codes[index].clone()

    def take_cache(self) -> DynamicCache:
        """Hand the talker's KV cache over (to a batch); this utterance keeps an empty one."""
        cache, self._cache = self._cache, DynamicCache()
        return cache

    def stop(self) -> None:
        """Mark a stop from outside (the batch scheduler) and free the KV cache."""
        if self.stop_reason is None:
            self.stop_reason = "stopped"
        self._cache = DynamicCache()

    # -- decoding -----------------------------------------------------------------------------------------------

    def context_codes(self) -> torch.Tensor:
        """Reference codes (ICL mode) followed by the generated frames: (frames, groups)."""
        ref = self.prefill.ref_code
        return self.codes if ref is None else torch.cat([ref.to(self.device), self.codes], dim=0)

    def reference_codes(self) -> torch.Tensor | None:
        """The reference recording's codes in ICL mode (frames, groups), decoded ahead of the generated frames."""
        ref = self.prefill.ref_code
        return None if ref is None else ref.to(self.device)

    def decode_all(self) -> np.ndarray:
        """All generated frames decoded in one pass (reference codes in front in ICL mode, then cut off)."""
        if self.frames_generated == 0:
            return np.zeros(0, dtype=np.float32)
        all_codes = self.context_codes()
        offset = all_codes.shape[0] - self.frames_generated
        wav = decode_frames(self.speech_model, all_codes)[offset * self.samples_per_frame :]
        return wav.float().cpu().numpy().astype(np.float32, copy=False)

    def stream(
        self,
        *,
        first_chunk_frames: int = 4,
        chunk_frames: int = 12,
        should_stop: Callable[[], bool] = _never,
    ) -> Iterator[np.ndarray]:
        """Yield float32 audio pieces: after ``first_chunk_frames`` frames, then every ``chunk_frames``.

        The rest is yielded at EOS or ``max_new_tokens``; after a stop nothing more is decoded or yielded.
        Arguments are checked here, before the first frame.

        Each frame is decoded once, continuing this utterance's decoder state, so the pieces joined equal
        :meth:`decode_all` within float rounding (about 1e-5 in float32), whatever the chunk sizes.
        """
        cutter = ChunkCutter(
            self,
            first_chunk_frames=first_chunk_frames,
            chunk_frames=chunk_frames,
        )
        return self._stream(cutter, should_stop)

    def _stream(self, cutter: ChunkCutter, should_stop: Callable[[], bool]) -> Iterator[np.ndarray]:
        for _frame in self.frames(should_stop):
            piece = cutter.after_frame()
            if piece is not None:
                yield piece
        piece = cutter.rest()
        if piece is not None:
            yield piece

    def generate_codes(self, should_stop: Callable[[], bool] = _never) -> torch.Tensor:
        """Run to the end; the codes (frames, groups) on the CPU."""
        for _frame in self.frames(should_stop):
            pass
        return self.codes.cpu()

    def synthesize_whole(self, should_stop: Callable[[], bool] = _never) -> np.ndarray:
        """Run to the end, then decode every frame at once: the one-shot reference for :meth:`stream`."""
        self.generate_codes(should_stop)
        return self.decode_all()
