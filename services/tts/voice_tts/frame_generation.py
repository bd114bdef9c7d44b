"""Frame-by-frame Qwen3-TTS voice cloning: stream 24 kHz audio while the talker generates codec frames.

``qwen_tts``'s ``generate_voice_clone`` runs ``talker.generate`` to the end and decodes everything at once. This
module drives the same modules by hand, one codec frame (12.5 Hz, 1920 samples at 24 kHz) at a time:

1. :func:`voice_tts.talker_prompt.build_prefill` builds the talker's input embeddings exactly as
   ``Qwen3TTSForConditionalGeneration.generate`` does before it calls ``talker.generate``.
2. :class:`Utterance` steps ``talker.model`` with its own ``DynamicCache``, samples the first code of
   each frame with transformers' logits processors (repetition penalty, EOS blocked for ``min_new_tokens``,
   special ids suppressed, temperature, top-k, top-p), samples the remaining code groups with the code
   predictor step by step (the same processors ``code_predictor.generate`` would use), and builds the next
   input embedding as ``Qwen3TTSTalkerForConditionalGeneration.forward`` does.
3. Audio is decoded in chunks with ``speech_tokenizer.model.decoder``: a small first chunk for a fast first
   sound, then every ``chunk_frames`` frames, each with ``left_context_frames`` earlier frames as decoder context
   (in ICL mode the reference codes are the context of the first chunks), emitting only the new samples.

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
position), and all per-request state (KV caches, generator, codes) lives in the :class:`Utterance`.
The model weights are only read, so several utterances may share one model from several threads; they then
compete for the same CPU cores. Each generator must be consumed by one thread at a time; grad mode is
switched off inside every step, never across a ``yield``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from voice_tts.qwen import Qwen3TTSModel, VoiceClonePromptItem
from voice_tts.synthesis_types import StopReason
from voice_tts.talker_prompt import build_prefill

# qwen_tts 0.1.1's hard defaults (Qwen3TTSModel._merge_generate_kwargs), used when generate_config.json lacks a key.
HARD_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    "max_new_tokens": 2048,
}
# Qwen3TTSForConditionalGeneration.generate passes min_new_tokens=2: EOS cannot be the first two tokens.
DEFAULT_MIN_NEW_TOKENS = 2


def _never() -> bool:
    return False


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling settings: caller's value, else the model's generate_config.json, else qwen_tts's."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    subtalker_do_sample: bool
    subtalker_temperature: float
    subtalker_top_k: int
    subtalker_top_p: float


def default_max_frames(model: Qwen3TTSModel) -> int:
    """The package's frame cap: its max_new_tokens (generate_config.json, else 2048) minus one."""
    defaults: dict[str, Any] = model.generate_defaults or {}
    return int(defaults.get("max_new_tokens", HARD_DEFAULTS["max_new_tokens"])) - 1


def resolve_sampling(
    model: Qwen3TTSModel,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    subtalker_temperature: float | None = None,
    subtalker_top_k: int | None = None,
    subtalker_top_p: float | None = None,
) -> SamplingParams:
    """Merge caller values with the model's defaults as ``Qwen3TTSModel._merge_generate_kwargs`` does.

    ``temperature=0`` (given or from the defaults) means greedy decoding; so does ``do_sample: false`` in the
    model's defaults when the caller gives no temperature. The code predictor follows the talker's greedy choice
    unless ``subtalker_temperature`` is given (0 again meaning greedy).
    """
    defaults: dict[str, Any] = model.generate_defaults or {}

    def pick(name: str, value: Any) -> Any:
        if value is not None:
            return value
        return defaults.get(name, HARD_DEFAULTS[name])

    temp = float(pick("temperature", temperature))
    do_sample = temp > 0 and (temperature is not None or bool(pick("do_sample", None)))
    sub_temp = float(pick("subtalker_temperature", subtalker_temperature))
    if subtalker_temperature is not None:
        sub_do_sample = sub_temp > 0
    else:
        sub_do_sample = do_sample and sub_temp > 0 and bool(pick("subtalker_dosample", None))
    params = SamplingParams(
        do_sample=do_sample,
        temperature=temp,
        top_k=int(pick("top_k", top_k)),
        top_p=float(pick("top_p", top_p)),
        repetition_penalty=float(pick("repetition_penalty", repetition_penalty)),
        subtalker_do_sample=sub_do_sample,
        subtalker_temperature=sub_temp,
        subtalker_top_k=int(pick("subtalker_top_k", subtalker_top_k)),
        subtalker_top_p=float(pick("subtalker_top_p", subtalker_top_p)),
    )
    if params.temperature < 0 or params.subtalker_temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < params.top_p <= 1 or not 0 < params.subtalker_top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if params.top_k < 0 or params.subtalker_top_k < 0:
        raise ValueError("top_k must be >= 0 (0 = no top-k)")
    if params.repetition_penalty <= 0:
        raise ValueError("repetition_penalty must be > 0")
    return params


def _warpers(temperature: float, top_k: int, top_p: float) -> list[Any]:
    """The sampling warpers transformers' ``_get_logits_processor`` adds (num_beams=1), in its order."""
    warpers: list[Any] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


@torch.inference_mode()
def residual_codes(
    rows: list[Utterance], past_hidden: torch.Tensor, first: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Code groups 1.. for a batch of frames (``code_predictor.generate`` done by hand) and each frame's
    embeddings' sum: past_hidden (B, 1, H) and first codes (B, 1) -> codes (B, G-1) and sums (B, 1, H).

    Every row samples with its own processors, history and generator, in the same order as alone; the rows share
    the predictor's forward passes (all rows have the same length, so no padding is needed).
    """
    lead = rows[0]
    predictor = lead._predictor
    embeddings = predictor.get_input_embeddings()
    device = lead.device
    batch = len(rows)
    first_embed: torch.Tensor = lead._talker.get_input_embeddings()(first)
    cache = DynamicCache()
    inputs = torch.cat((past_hidden, first_embed), dim=1)
    codes: list[torch.Tensor] = []
    code_embeds = [first_embed]
    history = torch.zeros((batch, 0), dtype=torch.long, device=device)
    position = 0
    for step in range(lead.num_groups - 1):
        if step > 0:
            inputs = code_embeds[-1]
        projected = predictor.small_to_mtp_projection(inputs)
        length = projected.shape[1]
        out = predictor.model(
            inputs_embeds=projected,
            position_ids=torch.arange(position, position + length, device=device)
            .unsqueeze(0)
            .expand(batch, -1),
            past_key_values=cache,
            use_cache=True,
        )
        position += length
        logits = predictor.lm_head[step](out.last_hidden_state)
        code = torch.cat(
            [
                row._sample(
                    logits[i : i + 1],
                    row._predictor_processors,
                    history[i : i + 1],
                    row.params.subtalker_do_sample,
                )
                for i, row in enumerate(rows)
            ],
            dim=0,
        )
        history = torch.cat([history, code], dim=1)
        codes.append(code)
        code_embeds.append(embeddings[step](code))
    summed = torch.cat(code_embeds, dim=1).sum(1, keepdim=True)
    return torch.cat(codes, dim=1), summed


class ChunkCutter:
    """When to decode: after ``first_chunk_frames`` frames, then every ``chunk_frames``, the rest at the end.

    :meth:`due` and :meth:`rest_due` say which frames to decode next (``(start, end)``) without decoding, so a
    caller can decode several utterances' spans in one pass (:func:`decode_spans`) and then :meth:`mark` them.
    """

    def __init__(
        self,
        utterance: Utterance,
        *,
        first_chunk_frames: int = 4,
        chunk_frames: int = 12,
        left_context_frames: int = 25,
    ) -> None:
        if first_chunk_frames < 1 or chunk_frames < 1 or left_context_frames < 0:
            raise ValueError("first_chunk_frames and chunk_frames must be >= 1, left_context_frames >= 0")
        self.utterance = utterance
        self._first = first_chunk_frames
        self._every = chunk_frames
        self.left_context_frames = left_context_frames
        self.emitted = 0  # frames decoded and handed out

    def due(self) -> tuple[int, int] | None:
        """The frames to decode after the latest frame, if a chunk is complete."""
        generated = self.utterance.frames_generated
        if generated - self.emitted < (self._first if self.emitted == 0 else self._every):
            return None
        return self.emitted, generated

    def rest_due(self) -> tuple[int, int] | None:
        """At the end: the frames not yet decoded; nothing after a stop (the client has gone)."""
        utterance = self.utterance
        if utterance.stop_reason == "stopped" or utterance.frames_generated <= self.emitted:
            return None
        return self.emitted, utterance.frames_generated

    def mark(self, span: tuple[int, int]) -> None:
        self.emitted = span[1]

    def after_frame(self) -> np.ndarray | None:
        """:meth:`due`, decoded."""
        return self._cut(self.due())

    def rest(self) -> np.ndarray | None:
        """:meth:`rest_due`, decoded."""
        return self._cut(self.rest_due())

    def _cut(self, span: tuple[int, int] | None) -> np.ndarray | None:
        if span is None:
            return None
        (piece,) = decode_spans([(self.utterance, *span)], self.left_context_frames)
        self.mark(span)
        return piece


@torch.inference_mode()
def decode_codes(decoder: Any, codes: torch.Tensor) -> torch.Tensor:
    """The speech tokenizer decoder's ``forward`` on codes (B, G, T) -> audio (B, 1, samples), with the
    pre-transformer's attention mask built here.

    The package lets transformers build the sliding-window causal mask on every call, through a vmap'd mask function
    that cost 16-20 ms a call on the CPU whatever the length (more than the tiny model's whole decode of a 4-frame
    chunk). The mask is the same (query i sees keys i-window+1..i), and the output is bit-identical to
    ``decoder(codes)`` (tested).
    """
    hidden = decoder.quantizer.decode(codes)
    hidden = decoder.pre_conv(hidden).transpose(1, 2)
    length = hidden.shape[1]
    positions = torch.arange(length, device=hidden.device)
    distance = positions.view(-1, 1) - positions.view(1, -1)  # query - key
    window = decoder.pre_transformer.config.sliding_window
    causal = distance >= 0
    sliding = causal if window is None else causal & (distance < window)
    masks = {
        "full_attention": causal.view(1, 1, length, length),
        "sliding_attention": sliding.view(1, 1, length, length),
    }
    hidden = decoder.pre_transformer(inputs_embeds=hidden, attention_mask=masks).last_hidden_state
    hidden = hidden.permute(0, 2, 1)
    for blocks in decoder.upsample:
        for block in blocks:
            hidden = block(hidden)
    wav = hidden
    for block in decoder.decoder:
        wav = block(wav)
    clamped: torch.Tensor = wav.clamp(min=-1, max=1)
    return clamped


@torch.inference_mode()
def decode_spans(spans: Sequence[tuple[Utterance, int, int]], left_context_frames: int) -> list[np.ndarray]:
    """The audio of each ``(utterance, start, end)`` span of generated frames, decoded with up to
    ``left_context_frames`` earlier frames (reference codes in ICL mode count as earlier frames).

    Spans of equal length (context included) go through the speech decoder together, one pass per length: the
    decoder's fixed cost per call (its attention masks) is paid once for the whole group. The utterances must
    share one model.
    """
    prepared: list[tuple[torch.Tensor, int]] = []
    for utterance, start, end in spans:
        if not 0 <= start < end <= utterance.frames_generated:
            raise ValueError(f"bad frame span [{start}, {end}) of {utterance.frames_generated}")
        all_codes = utterance._context_codes()
        offset = all_codes.shape[0] - utterance.frames_generated  # reference frames in front
        context = min(left_context_frames, offset + start)
        prepared.append((all_codes[offset + start - context : offset + end], context))
    groups: dict[int, list[int]] = {}
    for index, (codes, _context) in enumerate(prepared):
        groups.setdefault(codes.shape[0], []).append(index)
    audio: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(spans)
    for length, members in groups.items():
        lead = spans[members[0]][0]
        stacked = torch.stack([prepared[i][0] for i in members]).clamp(min=0).transpose(1, 2)  # (B, G, T)
        wav = decode_codes(lead._decoder, stacked)
        per_frame = lead.samples_per_frame
        for row, index in enumerate(members):
            context = prepared[index][1]
            piece = wav[row, 0, context * per_frame : length * per_frame]
            audio[index] = piece.float().cpu().numpy().astype(np.float32, copy=False)
    return audio


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
        self.params = resolve_sampling(
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

        outer = model.model
        self._talker = outer.talker
        self._predictor = outer.talker.code_predictor
        talker_config = outer.config.talker_config
        self.num_groups: int = int(talker_config.num_code_groups)
        self.eos_id: int = int(talker_config.codec_eos_token_id)
        vocab: int = int(talker_config.vocab_size)
        self._decoder = outer.speech_tokenizer.model.decoder
        self.samples_per_frame: int = int(outer.speech_tokenizer.get_decode_upsample_rate())
        self.sample_rate: int = int(outer.speech_tokenizer.get_output_sample_rate())
        self.device: torch.device = self._talker.device

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

        p = self.params
        processors: list[Any] = []
        if p.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=p.repetition_penalty))
        if min_new_tokens > 0:
            processors.append(
                MinNewTokensLengthLogitsProcessor(0, min_new_tokens, self.eos_id, device=self.device)
            )
        suppress = [i for i in range(vocab - 1024, vocab) if i != self.eos_id]
        processors.append(SuppressTokensLogitsProcessor(suppress, device=self.device))
        if p.do_sample:
            processors += _warpers(p.temperature, p.top_k, p.top_p)
        self._talker_processors: list[Any] = processors
        self._predictor_processors: list[Any] = (
            _warpers(p.subtalker_temperature, p.subtalker_top_k, p.subtalker_top_p)
            if p.subtalker_do_sample
            else []
        )

        self._codes = torch.zeros((self.max_frames, self.num_groups), dtype=torch.long, device=self.device)
        self._first_codes = torch.zeros((1, 0), dtype=torch.long, device=self.device)
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

    def _sample(
        self, logits: torch.Tensor, processors: list[Any], history: torch.Tensor, sample: bool
    ) -> torch.Tensor:
        """One token (1, 1) from the last position's logits, as transformers' ``_sample`` picks it."""
        # The processors in order, as LogitsProcessorList applies them, without its per-call signature inspection
        # (a third of the sampling time at small model sizes). transformers annotates LongTensor/FloatTensor,
        # which plain tensors are at run time.
        ids = cast(torch.LongTensor, history)
        scores = cast(torch.FloatTensor, logits[:, -1, :].to(copy=True, dtype=torch.float32))
        for processor in processors:
            scores = processor(ids, scores)
        if sample:
            probs = torch.softmax(scores, dim=-1)
            return torch.multinomial(probs, num_samples=1, generator=self.generator)
        return torch.argmax(scores, dim=-1, keepdim=True)

    @torch.inference_mode()
    def _talker_forward(self, embeds: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the talker over ``embeds`` at cache positions ``start...``: (last hidden (1,1,H), logits)."""
        length = embeds.shape[1]
        positions = torch.arange(start, start + length, device=self.device).view(1, 1, -1).expand(3, 1, -1)
        out = self._talker.model(
            inputs_embeds=embeds,
            attention_mask=torch.ones((1, start + length), dtype=torch.long, device=self.device),
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        hidden: torch.Tensor = out.last_hidden_state
        logits: torch.Tensor = self._talker.codec_head(hidden)
        return hidden[:, -1:, :], logits

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
        first = self._sample(logits, self._talker_processors, self._first_codes, self.params.do_sample)
        self._first_codes = torch.cat([self._first_codes, first], dim=1)
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

    @property
    def talker(self) -> Any:
        """The talker module (for the batch scheduler's batched forward)."""
        return self._talker

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

    @torch.inference_mode()
    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decoder output for codes (T, G): (T * samples_per_frame,) float."""
        wav = decode_codes(self._decoder, codes.clamp(min=0).transpose(0, 1).unsqueeze(0))
        return wav[0, 0, : codes.shape[0] * self.samples_per_frame]

    def _context_codes(self) -> torch.Tensor:
        """Reference codes (ICL mode) followed by the generated frames."""
        ref = self.prefill.ref_code
        return self.codes if ref is None else torch.cat([ref.to(self.device), self.codes], dim=0)

    def decode_span(self, start: int, end: int, left_context_frames: int) -> np.ndarray:
        """Audio of generated frames [start, end), decoded with up to ``left_context_frames`` earlier frames."""
        (piece,) = decode_spans([(self, start, end)], left_context_frames)
        return piece

    def decode_all(self) -> np.ndarray:
        """All generated frames decoded in one pass (reference codes in front in ICL mode, then cut off)."""
        if self.frames_generated == 0:
            return np.zeros(0, dtype=np.float32)
        all_codes = self._context_codes()
        offset = all_codes.shape[0] - self.frames_generated
        wav = self._decode(all_codes)[offset * self.samples_per_frame :]
        return wav.float().cpu().numpy().astype(np.float32, copy=False)

    def stream(
        self,
        *,
        first_chunk_frames: int = 4,
        chunk_frames: int = 12,
        left_context_frames: int = 25,
        should_stop: Callable[[], bool] = _never,
    ) -> Iterator[np.ndarray]:
        """Yield float32 audio pieces: after ``first_chunk_frames`` frames, then every ``chunk_frames``.

        The rest is yielded at EOS or ``max_new_tokens``; after a stop nothing more is decoded or yielded.
        Arguments are checked here, before the first frame.

        ``left_context_frames`` sets accuracy against :meth:`decode_all`: the decoder's pre-transformer attends
        over a sliding window (72 frames in the 12 Hz tokenizer config) and its convolutions reach a little
        further, so a chunk decoded with less context than that differs from the one-shot decode. On the tiny
        model: 25 frames (upstream's chunked_decode value) ~0.02-0.03 max abs (output RMS ~0.1), 72 ~0.003-0.01,
        100 ~1e-5 (rounding). Each chunk costs a decode of ``left_context_frames + chunk`` frames.
        """
        cutter = ChunkCutter(
            self,
            first_chunk_frames=first_chunk_frames,
            chunk_frames=chunk_frames,
            left_context_frames=left_context_frames,
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
