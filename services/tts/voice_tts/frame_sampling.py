"""How a request picks its codes: the sampling settings resolved as qwen_tts resolves them, and each request's
sampler (its seeded generator and transformers' logits processors, applied as ``generate`` applies them).

Every request samples from its own ``torch.Generator``, so concurrent requests stay deterministic. The talker's
first code of a frame and the code predictor's residual codes draw from the same generator in the order
``generate_voice_clone`` draws them after ``torch.manual_seed(seed)``, so a seed gives the package's codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from voice_tts.qwen import Qwen3TTSModel

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


class FrameSampler:
    """One request's sampling state: its generator (seeded once), the talker's and the code predictor's logits
    processors, and the first codes drawn so far (the repetition penalty's history)."""

    def __init__(
        self,
        params: SamplingParams,
        *,
        seed: int,
        device: torch.device,
        eos_id: int,
        vocab_size: int,
        min_new_tokens: int,
    ) -> None:
        self.params = params
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

        p = params
        # transformers annotates these processors' device as str; they hand it to torch.tensor, which takes either.
        on: Any = device
        processors: list[Any] = []
        if p.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=p.repetition_penalty))
        if min_new_tokens > 0:
            processors.append(MinNewTokensLengthLogitsProcessor(0, min_new_tokens, eos_id, device=on))
        suppress = [i for i in range(vocab_size - 1024, vocab_size) if i != eos_id]
        processors.append(SuppressTokensLogitsProcessor(suppress, device=on))
        if p.do_sample:
            processors += _warpers(p.temperature, p.top_k, p.top_p)
        self._talker_processors: list[Any] = processors
        self._predictor_processors: list[Any] = (
            _warpers(p.subtalker_temperature, p.subtalker_top_k, p.subtalker_top_p)
            if p.subtalker_do_sample
            else []
        )
        self._first_codes = torch.zeros((1, 0), dtype=torch.long, device=device)

    @torch.inference_mode()
    def first_code(self, logits: torch.Tensor) -> torch.Tensor:
        """The next frame's first code (1, 1) from the talker's logits (1, T, V), EOS included."""
        first = self._sample(logits, self._talker_processors, self._first_codes, self.params.do_sample)
        self._first_codes = torch.cat([self._first_codes, first], dim=1)
        return first

    def residual_code(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """The next residual code (1, 1) from the code predictor's logits (1, T, V), after this frame's residual
        codes so far (``history``, (1, n))."""
        return self._sample(logits, self._predictor_processors, history, self.params.subtalker_do_sample)

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
