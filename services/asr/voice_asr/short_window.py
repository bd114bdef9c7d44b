"""How long a short encoder window is (no faster-whisper here: the engine decides with it before loading anything)."""

from __future__ import annotations

from voice_asr.transcript import SAMPLE_RATE

# Whisper's window: 30 s of 10 ms feature frames.
FULL_WINDOW_FRAMES = 3000
SAMPLES_PER_FRAME = SAMPLE_RATE // 100


def short_window_frames(audio_frames: int) -> int:
    """Feature frames a short window encodes for ``audio_frames`` of audio: twice the audio plus 1 s, in whole
    seconds, at most Whisper's 30 s. Whisper needs the padding after the audio to see where it ends."""
    frames = 2 * audio_frames + 100
    return min(FULL_WINDOW_FRAMES, -(-frames // 100) * 100)
