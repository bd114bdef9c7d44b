"""The one-shot references a TTS stream is compared with (issue 15): qwen_tts's own ``generate_voice_clone`` with
greedy decoding, and one whole decode of the same codes, with the comparison in PCM16 steps. Shared by the service
tests and ``bench``; imports torch (through voice_tts) only when called."""

from __future__ import annotations

from typing import Any

import numpy as np

from voice_common.audio.encoding import to_s16


def package_greedy_audio(model: Any, text: str, language: str, prompt: Any, frames: int) -> np.ndarray:
    """qwen_tts's ``generate_voice_clone`` for ``frames`` frames, greedy (talker and code predictor), float32."""
    wavs, _rate = model.generate_voice_clone(
        text,
        language=language,
        voice_clone_prompt=[prompt],
        do_sample=False,
        subtalker_dosample=False,
        max_new_tokens=frames + 1,  # the package makes at most max_new_tokens - 1 frames
    )
    return np.asarray(wavs[0], dtype=np.float32)


def whole_decode_audio(model: Any, text: str, language: str, prompt: Any, frames: int) -> np.ndarray:
    """The same greedy codes decoded in one pass (reference codes in front in ICL mode), float32: exact where the
    package's own decode goes in 300-frame pieces."""
    from voice_tts.frame_generation import Utterance

    utterance = Utterance(model, text, language, prompt, seed=0, temperature=0, max_new_tokens=frames)
    return utterance.synthesize_whole()


def pcm16_steps(audio: np.ndarray, pcm: np.ndarray) -> int:
    """Max |difference| in PCM16 steps between float ``audio`` and PCM16 samples ``pcm``. The package cuts ICL audio
    at int(reference share x samples), which float rounding may put one sample early, so a float side one sample
    longer is compared by its last samples."""
    if audio.size - pcm.size not in (0, 1):
        raise ValueError(f"{audio.size} samples compared with {pcm.size}")
    tail = audio[audio.size - pcm.size :]
    return int(np.abs(to_s16(tail).astype(np.int32) - pcm.astype(np.int32)).max())
