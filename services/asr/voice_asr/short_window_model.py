"""faster-whisper's ``WhisperModel`` able to encode less than Whisper's 30 s window (an adapter: it imports
faster-whisper, so only :func:`voice_asr.engine.load_whisper` imports it). Why and how well: the docstring of
:mod:`voice_asr.engine`."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from faster_whisper import WhisperModel

from voice_asr.short_window import FULL_WINDOW_FRAMES, short_window_frames


class ShortWindowWhisperModel(WhisperModel):
    """Encodes a short window in the threads inside :meth:`short_window`, the full window elsewhere.

    The choice is per thread because one model serves several transcriptions at once (``num_workers``), and
    faster-whisper calls :meth:`encode` from inside its lazy segment generator, in the thread that consumes it.
    """

    _in_short_window = threading.local()

    @contextlib.contextmanager
    def short_window(self) -> Iterator[None]:
        self._in_short_window.on = True
        try:
            yield
        finally:
            self._in_short_window.on = False

    def encode(self, features: np.ndarray) -> Any:
        if getattr(self._in_short_window, "on", False) and features.shape[-1] == FULL_WINDOW_FRAMES:
            # faster-whisper pads the features of audio shorter than the window with zeros; a frame of audio,
            # digital silence included, is never all zeros after the log-mel normalisation.
            heard = np.flatnonzero(np.any(features != 0, axis=tuple(range(features.ndim - 1))))
            audio_frames = int(heard[-1]) + 1 if heard.size else 0
            features = features[..., : short_window_frames(audio_frames)]
        return super().encode(features)
