"""Real test speech for the ASR tests and benchmarks: recorded sentences, silence, and a WER with the
normalisation the assertions need (Whisper's input: 16 kHz mono float32).

The speech was made once with Debian's synthesizers (flite's slt, rms and awb voices; espeak-ng for German and
Spanish) and is committed under ``tests/speech/`` as lossless FLAC beside a manifest, so the tests and the
benchmark need neither program: ``tools/make_test_speech.py`` lists every (text, voice) pair and remakes the
recordings where flite and espeak-ng are installed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import soundfile
from num2words import num2words

from voice_common.audio import decode_audio
from voice_common.audio.encoding import wav_header

SAMPLE_RATE = 16_000

# The repository's tests/speech folder (voice_common is installed in editable mode by `make setup`).
CORPUS_DIR = Path(__file__).resolve().parents[1] / "tests" / "speech"
MANIFEST = CORPUS_DIR / "manifest.json"
GENERATOR = "tools/make_test_speech.py"

# One sentence per voice for the short clips; all of them (twice, voices taking turns) make the long file.
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "We will meet again next week to discuss the budget for the new project.",
    "Please remember to send the report before the end of the day.",
    "The weather today is sunny with a light breeze from the west.",
    "She opened the window and listened to the birds singing in the garden.",
    "Our team finished the design review and agreed on the next steps.",
    "He bought fresh bread, cheese and apples at the market this morning.",
    "The train to the city leaves every twenty minutes from the main station.",
)
VOICES = ("slt", "rms", "awb")  # flite's
GAP_SECONDS = 0.5  # between the sentences of the long file

# The live-transcription tests: three sentences fed as fast as possible, and a conversation at real-time pace
# (each sentence in VOICES[index % 3]).
LIVE_SHORT = (
    "Please send the report to the finance team before Friday.",
    "The weather was cold and the roads were covered with snow.",
    "She opened the window and listened to the birds singing outside.",
)
LIVE_LONG = (
    "The meeting starts early in the morning.",
    "We should review the budget for the next quarter.",
    "Our new product will be available in stores next month.",
    "He forgot his keys at the office and had to go back.",
    "The children played in the garden until the sun went down.",
    "Please remember to turn off the lights when you leave the room.",
    "The train to the city leaves every half hour from the main station.",
    "I would like a cup of coffee with milk and no sugar.",
    "The library is closed on Sundays and public holidays.",
    "Send the report to the finance team before Friday.",
    "The weather was cold and the roads were covered with snow.",
    "She opened the window and listened to the birds singing outside.",
    "We walked along the river and watched the boats go by.",
    "The doctor said that he should rest for a few days.",
)
LIVE_LAST_WORDS = "The library is closed on Sundays."  # in slt, fed without a pause after it
# Real speech that repeats itself (looks like Whisper looping to the short-window check), in slt.
REPEATED = "Turn left at the bridge. Turn left at the bridge."
# A name tiny.en cannot spell without a prompt or hotwords ("Sheldon Cowellchick"), in slt.
NAMED = "Please send the invoice to Siobhan Kowalczyk today."
# espeak-ng's voices are its language codes.
GERMAN = "Der Zug in die Stadt fährt alle 20 Minuten vom Hauptbahnhof ab."
SPANISH = "El tren a la ciudad sale cada veinte minutos desde la estación principal."

Speak = Callable[[str, str], np.ndarray]


class NotRecorded(LookupError):
    """A text and voice the corpus does not hold."""


@dataclass(frozen=True)
class Recording:
    text: str
    voice: str  # a flite voice (slt, rms, awb) or an espeak-ng language (de, es)
    synthesizer: str  # "flite" or "espeak-ng"
    language: str
    file: str  # under CORPUS_DIR


@functools.cache
def recordings() -> dict[tuple[str, str], Recording]:
    """The manifest, by (text, voice)."""
    entries = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return {(entry["text"], entry["voice"]): Recording(**entry) for entry in entries}


def _recording(text: str, voice: str) -> Recording:
    try:
        return recordings()[(text, voice)]
    except KeyError:
        raise NotRecorded(
            f"no recording of {text!r} in voice {voice!r} in {MANIFEST}: add the pair to the list in {GENERATOR}, "
            f"run `.venv/bin/python -m tools.make_test_speech` where flite and espeak-ng are installed "
            f"(apt-get install flite espeak-ng), and commit tests/speech/"
        ) from None


def speech_wav(text: str, voice: str) -> bytes:
    """The recording as a 16-bit WAV at the synthesizer's own rate: the bytes flite or espeak-ng wrote."""
    pcm, rate = soundfile.read(CORPUS_DIR / _recording(text, voice).file, dtype="int16")
    data = np.asarray(pcm, dtype="<i2").tobytes()
    return wav_header(rate, len(data)) + data


@functools.cache
def _samples(text: str, voice: str) -> np.ndarray:
    # Through the WAV path the synthesizer's own file took before the corpus: the same samples, to the bit.
    samples = decode_audio(speech_wav(text, voice), target_rate=SAMPLE_RATE).samples
    samples.setflags(write=False)
    return samples


def speak(text: str, voice: str) -> np.ndarray:
    """The recorded speech of ``text`` in ``voice`` as float32 mono 16 kHz samples; :class:`NotRecorded` names
    the way to add a missing one."""
    return _samples(text, voice).copy()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


# --- word error rate ---

# How close a transcript must be. Whisper's int8 kernels round differently from one CPU to another (AMX, AVX-512,
# AVX2; Intel or AMD), and tiny.en then hears a borderline word differently ("jump" for "jumps"), so no bar may
# hang on one word. Pooled over 90 words or more, one word is about 0.01 of WER: POOLED_WER_BAR leaves room for
# several, yet garbled or unrelated text scores near 1. One sentence (6 to 13 words) checks plumbing, that the
# speech arrived whole: one or two borderline words pass, a lost half of the audio does not.
POOLED_WER_BAR = 0.1
SENTENCE_WER_BAR = 0.25

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?")


def _spoken_number(match: re.Match[str], language: str) -> str:
    token = match.group()
    ordinal = token[-2:].isalpha()
    digits = token[:-2] if ordinal else token
    if language == "en":
        digits = digits.replace(",", "")  # 1,000
    number: float = float(digits.replace(",", ".")) if re.search(r"[.,]", digits) else int(digits)
    return f" {num2words(number, lang=language, to='ordinal' if ordinal else 'cardinal')} "


def normalise(text: str, language: str = "en") -> str:
    """Lowercase words without punctuation, numbers spelt out as spoken in ``language`` (Whisper writes "20"
    where the synthesizer said "twenty", and either may be written)."""
    spelt = _NUMBER.sub(lambda match: _spoken_number(match, language), text.lower())
    words = (word.strip("'") for word in re.sub(r"[^\w']+|_", " ", spelt.lower()).split())
    return " ".join(word for word in words if word)


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    return float(jiwer.wer(normalise(reference, language), normalise(hypothesis, language)))


def pooled_wer(references: Sequence[str], hypotheses: Sequence[str], language: str = "en") -> float:
    """Word errors over all the references' words, each reference aligned with its own hypothesis: one borderline
    word weighs 1/total, not 1/sentence."""
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    return float(
        jiwer.wer(
            [normalise(text, language) for text in references],
            [normalise(text, language) for text in hypotheses],
        )
    )
