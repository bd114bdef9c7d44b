"""Real test speech for the ASR tests and benchmarks: sentences, flite voices, silence, and a WER with the
normalisation the assertions need (Whisper's input: 16 kHz mono float32)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import jiwer
import numpy as np

from voice_common.audio import decode_audio

SAMPLE_RATE = 16_000

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
VOICES = ("slt", "rms", "awb")
GAP_SECONDS = 0.5  # between the sentences of the long file

Speak = Callable[[str, str], np.ndarray]

_NUMBERS = {"20": "twenty"}


def normalise(text: str) -> str:
    """Lowercase, no punctuation, numbers as spoken (Whisper writes "20" where flite said "twenty")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return " ".join(_NUMBERS.get(word, word) for word in words)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def flite_speech(text: str, voice: str, path: Path) -> np.ndarray:
    """flite's speech of ``text`` as float32 mono 16 kHz samples (``path``: where the WAV goes)."""
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return decode_audio(path.read_bytes(), target_rate=SAMPLE_RATE).samples


def espeak_speech(text: str, voice: str, path: Path) -> np.ndarray:
    """espeak-ng's speech of ``text`` in ``voice`` (a language such as "de" or "es"), as :func:`flite_speech`."""
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
    return decode_audio(path.read_bytes(), target_rate=SAMPLE_RATE).samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)
