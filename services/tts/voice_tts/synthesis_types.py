"""What a synthesis is asked for, may ask for, and returns: the request, the service's limits, the events and the
result (domain types: no grpc, no torch; the engine, its batch scheduler and the service all import them from here).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from voice_common.audio.encoding import AudioEncoding, check_output_rate
from voice_common.errors import ErrorList, InvalidArgument, quoted

if TYPE_CHECKING:
    from voice_tts.qwen import VoiceClonePromptItem  # qwen_tts and torch: not for a module of plain types

# The Qwen3-TTS models speak at 24 kHz; every request's audio is made at this rate, then resampled if asked.
MODEL_SAMPLE_RATE = 24_000

StopReason = Literal["eos", "max_new_tokens", "stopped"]

_SEED_MODULUS = 2**64
_SEED_RANGE = 2**63  # a random seed fits the API's int64


def piece_seed(seed: int, index: int) -> int:
    """The seed of piece ``index`` of a request with ``seed``: ``(seed + index) mod 2**64`` (torch's range)."""
    return (seed + index) % _SEED_MODULUS


# API language codes -> the names the Qwen3-TTS models use ("auto" lets the model pick, no language id).
LANGUAGES: dict[str, str] = {
    "zh": "chinese",
    "en": "english",
    "ja": "japanese",
    "ko": "korean",
    "de": "german",
    "fr": "french",
    "ru": "russian",
    "pt": "portuguese",
    "es": "spanish",
    "it": "italian",
    "auto": "auto",
}
SAMPLE_RATE_FIELD = "output_format.sample_rate_hertz"
SPEED_FIELD = "config.speed"
# Speaking rates a request may ask for (voice_tts.time_stretch stretches the audio to them, keeping the pitch).
MIN_SPEED = 0.25
MAX_SPEED = 4.0


def is_valid_speed(speed: float) -> bool:
    """Whether ``speed`` is a rate the service takes (NaN and infinities are not)."""
    return math.isfinite(speed) and MIN_SPEED <= speed <= MAX_SPEED


def model_language(language: str) -> str | None:
    """The model's name for an API language code (or a model name itself), case-insensitive; None if unknown."""
    key = language.strip().lower()
    if key in LANGUAGES:
        return LANGUAGES[key]
    return key if key in LANGUAGES.values() else None


@dataclass(frozen=True)
class SynthesisSpec:
    """What to say and how: everything of a request but the voice prompt, which is made once this is known to be
    valid (the voice of a profile costs a download and a model pass)."""

    text: str
    language: str  # an API code (see LANGUAGES) or "auto"
    seed: int | None  # None: the service picks one (and reports it)
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None  # most frames per piece (12.5 frames a second)
    encoding: AudioEncoding = AudioEncoding.LINEAR16
    sample_rate: int = MODEL_SAMPLE_RATE
    speed: float = 1.0  # speaking rate (MIN_SPEED-MAX_SPEED); the audio is time-stretched, the pitch kept

    def with_seed(self) -> SynthesisSpec:
        """This spec with a seed: its own, or a random one from the range a client can send back (int64, >= 0)."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(_SEED_RANGE))

    def with_prompt(self, prompt: VoiceClonePromptItem) -> SynthesisRequest:
        """The request to run: this spec, whose seed is chosen by now (:meth:`with_seed`), and ``prompt``."""
        if self.seed is None:
            raise ValueError("a request runs with a seed: call with_seed() first")
        return SynthesisRequest(
            prompt=prompt, **{field.name: getattr(self, field.name) for field in fields(self)}
        )


@dataclass(frozen=True)
class SynthesisRequest:
    """A :class:`SynthesisSpec` with its voice prompt: what the engine runs."""

    text: str
    language: str  # an API code (see LANGUAGES) or "auto"
    prompt: VoiceClonePromptItem
    seed: int
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None  # most frames per piece (12.5 frames a second)
    encoding: AudioEncoding = AudioEncoding.LINEAR16
    sample_rate: int = MODEL_SAMPLE_RATE
    speed: float = 1.0  # speaking rate (MIN_SPEED-MAX_SPEED); the audio is time-stretched, the pitch kept

    def sampling(self) -> dict[str, float]:
        """The sampling options the client set (the rest are the model's defaults), as stored with a generation."""
        options = {
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
        }
        return {name: float(value) for name, value in options.items() if value is not None}

    def parameters(self) -> dict[str, float]:
        """What is stored with a generation: the sampling options set, and the speed unless it is 1 (the seed
        reproduces the audio only at the same speed)."""
        return {**self.sampling(), **({"speed": self.speed} if self.speed != 1 else {})}


@dataclass(frozen=True)
class SynthesisLimits:
    max_text_chars: int = 5000
    max_piece_chars: int = 200
    max_queue: int = 32  # requests waiting or running; one more is refused
    max_batch: int = 8  # requests stepped through the model together
    first_chunk_frames: int = 4
    chunk_frames: int = 12


def validate(request: SynthesisSpec | SynthesisRequest, limits: SynthesisLimits | None = None) -> None:
    """Raise one InvalidArgument naming every bad field of ``request``."""
    limits = limits or SynthesisLimits()
    errors = ErrorList()
    if not request.text.strip():
        errors.add("text", "the text is empty; give the words to speak")
    elif len(request.text) > limits.max_text_chars:
        errors.add(
            "text",
            f"the text has {len(request.text)} characters; the most is {limits.max_text_chars}, "
            "so split it over several requests",
        )
    if model_language(request.language) is None:
        errors.add(
            "language",
            f"language {quoted(request.language)} is not supported; use one of {', '.join(LANGUAGES)}",
        )
    if request.temperature is not None and not 0 <= request.temperature <= 2:
        errors.add("temperature", f"temperature {request.temperature} must be from 0 (greedy) to 2")
    if request.top_k is not None and not 0 <= request.top_k <= 1000:
        errors.add("top_k", f"top_k {request.top_k} must be from 0 (off) to 1000")
    if request.top_p is not None and not 0 < request.top_p <= 1:
        errors.add("top_p", f"top_p {request.top_p} must be above 0 and at most 1")
    if request.repetition_penalty is not None and not 1 <= request.repetition_penalty <= 2:
        errors.add(
            "repetition_penalty", f"repetition_penalty {request.repetition_penalty} must be from 1 (off) to 2"
        )
    if request.max_new_tokens is not None and not 1 <= request.max_new_tokens <= 4096:
        errors.add("max_new_tokens", f"max_new_tokens {request.max_new_tokens} must be from 1 to 4096")
    if not is_valid_speed(request.speed):
        errors.add(
            SPEED_FIELD,
            f"speed {request.speed} must be from {MIN_SPEED} to {MAX_SPEED} (1 is the voice's own rate, "
            "2 twice as fast; 0 or unset means 1)",
        )
    try:
        check_output_rate(request.encoding, request.sample_rate, field=SAMPLE_RATE_FIELD)
    except InvalidArgument as error:
        errors.add(SAMPLE_RATE_FIELD, error.message)
    errors.raise_if_any()


@dataclass
class SynthesisEvent:
    audio: bytes  # encoded bytes ready now (non-empty except, possibly, in the last event)
    samples: int  # model-rate (24 kHz) samples these bytes cover


@dataclass
class SynthesisResult:
    seed: int
    duration_seconds: float  # audio produced
    time_to_first_audio_s: float  # from stream() to the first non-empty audio handed out (0 if none)
    total_s: float  # from stream() to the end
    queue_wait_s: float  # waiting for the model slot
    real_time_factor: float  # synthesis wall time (after the wait) / audio seconds; 0 if no audio
    stop_reason: StopReason  # "stopped" if cancelled, else "max_new_tokens" if any piece hit it, else "eos"
    pcm: np.ndarray  # float32 mono at the model's rate (24 kHz): the whole utterance, for history
    sample_rate: int = MODEL_SAMPLE_RATE
    pieces: int = 0  # text pieces synthesized (fully or in part)
    frames: int = 0  # codec frames generated over all pieces


@dataclass(frozen=True)
class SynthesisSummary:
    """What the client is told about a finished synthesis (after it was stored, if asked)."""

    generation_id: str  # "" when not stored
    duration_seconds: float
    seed: int
    time_to_first_audio_s: float  # from the call's arrival to its first audio
    total_s: float  # from the call's arrival to now
    queue_wait_s: float
    real_time_factor: float
