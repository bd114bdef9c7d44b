"""Fixtures shared by the ASR tests: real speech made with flite (three voices) and the real tiny.en model loaded
once (int8, two threads, offline)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from voice_asr.engine import AsrModelSpec, WhisperEngine, load_whisper
from voice_common.testing.speech import GAP_SECONDS, SENTENCES, VOICES, Speak, flite_speech, silence


@pytest.fixture(scope="session")
def speak(tmp_path_factory: pytest.TempPathFactory) -> Speak:
    """``speak(text, voice)``: flite's speech as float32 mono 16 kHz samples (cached per text and voice)."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (Debian package flite)")
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[tuple[str, str], np.ndarray] = {}

    def make(text: str, voice: str) -> np.ndarray:
        key = (text, voice)
        if key not in cache:
            cache[key] = flite_speech(text, voice, folder / f"{len(cache)}.wav")
        return cache[key]

    return make


@pytest.fixture(scope="session")
def long_speech(speak: Speak) -> tuple[np.ndarray, str]:
    """About 69 s: every sentence twice, voices taking turns, half a second apart; and its text."""
    texts = SENTENCES * 2
    parts: list[np.ndarray] = []
    for index, text in enumerate(texts):
        parts += [speak(text, VOICES[index % len(VOICES)]), silence(GAP_SECONDS)]
    return np.concatenate(parts), " ".join(texts)


@pytest.fixture(scope="session")
def engine() -> WhisperEngine:
    """The real tiny.en model on the CPU, int8, two threads (the test machines have two cores)."""
    loaded, device, compute_type = load_whisper(
        AsrModelSpec(device="cpu", compute_type="int8", cpu_threads=2)
    )
    assert (device, compute_type) == ("cpu", "int8_float32")
    return loaded
