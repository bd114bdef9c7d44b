"""What the ASR service works with and returns: recognition options and transcripts (domain types: no grpc, no
faster-whisper; the engine adapter converts its results into these)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["transcribe", "translate"]

# Whisper works on 16 kHz mono float32; every input is decoded and resampled to this first.
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class RecognitionOptions:
    # A language code hint; None (or "auto"): detect (multilingual models) or the model's only one.
    language: str | None = None
    task: Task = "transcribe"
    word_timestamps: bool = False
    vad_filter: bool = True
    beam_size: int = 5
    initial_prompt: str | None = None
    hotwords: str | None = None
    # Where the temperature schedule starts (0: greedy first, then 0.2, 0.4, ... up to 1 for a bad segment).
    temperature: float = 0.0
    # Whisper's fallback: decode again at higher temperatures when a segment looks wrong. Live passes turn it off
    # (a pass must stay short; the next pass corrects the guess), whole files keep it.
    temperature_fallback: bool = True
    # Encode about twice the audio's length instead of Whisper's full 30 s window (audio under 30 s, plain path):
    # several times cheaper for the short buffers of live passes. The engine caps the decoding and redoes with the
    # full window a result that repeats itself, the way a short window fails (voice_asr.engine).
    short_encoder_window: bool = False


@dataclass(frozen=True)
class Word:
    text: str  # as Whisper writes it, with its leading space
    start: float  # seconds from the start of the audio
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_probability: float = 0.0


@dataclass(frozen=True)
class Transcript:
    text: str  # the segments' texts joined and stripped
    language: str
    language_probability: float
    duration_seconds: float  # of the audio given
    segments: tuple[Segment, ...] = ()


@dataclass
class TranscriptionTimings:
    queue_wait_s: float = 0.0
    processing_s: float = 0.0
    real_time_factor: float = 0.0  # processing / audio duration; 0 for empty audio


@dataclass
class TranscriptionResult:
    transcript: Transcript
    timings: TranscriptionTimings = field(default_factory=TranscriptionTimings)


# A run of this many words said twice in a row, in one pass of a few seconds, is a loop, not speech.
_REPEATED_RUN_WORDS = 3
# A text whose last words repeat, this many or a whole period of them, ends in a loop.
_LOOP_TAIL_WORDS = 4
# gzip ratio above which faster-whisper, too, calls a decode repetitive (its compression_ratio_threshold).
_MAX_COMPRESSION_RATIO = 2.4


def repeats_itself(words: Sequence[Word], text: str) -> bool:
    """Whether a decode looks like Whisper looping: a run of words said twice in a row, a text that ends repeating
    itself (a loop the token budget cut short), or a text that compresses like a repetition."""
    said = [word.text.strip().lower().strip(".,?!;:…\"'") for word in words]
    count = len(said)
    for period in range(_REPEATED_RUN_WORDS, count - _REPEATED_RUN_WORDS + 1):
        for start in range(count - 2 * period + 1):
            if said[start : start + period] == said[start + period : start + 2 * period]:
                return True
        tail = 0
        while tail < count - period and said[count - 1 - tail] == said[count - 1 - tail - period]:
            tail += 1
        if tail >= min(period, _LOOP_TAIL_WORDS):
            return True
    data = text.encode()
    return len(data) > 0 and len(data) / len(zlib.compress(data)) > _MAX_COMPRESSION_RATIO
