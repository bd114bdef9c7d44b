"""The client's tests run against the real platform (client_platform.py), started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from client_platform import Platform, running_platform

from voice_testing.speech import SENTENCES, silence, speak, speech_wav


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("client-platform")) as started:
        yield started


@pytest.fixture(scope="session")
def speech() -> bytes:
    """A WAV of recorded speech (flite's slt, 16 kHz): SENTENCES[0]."""
    return speech_wav(SENTENCES[0], "slt")


@pytest.fixture(scope="session")
def live_pcm() -> bytes:
    """Two sentences with pauses as raw 16-bit PCM at 16 kHz, for live transcription."""
    parts = [speak(SENTENCES[1], "rms"), silence(1.0), speak(SENTENCES[2], "slt"), silence(1.0)]
    samples = np.concatenate(parts)
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="session")
def sentence_pcm() -> bytes:
    """One sentence and a pause as raw 16-bit PCM at 16 kHz (about 4.5 s), for a feed at real-time pace."""
    samples = np.concatenate([speak(SENTENCES[1], "rms"), silence(1.0)])
    return bytes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
