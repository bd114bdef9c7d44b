"""Stand-in for torchaudio.compliance.kaldi: importable, unusable (only qwen_tts's 25 Hz tokenizer calls it)."""

from typing import NoReturn


def _unavailable(name: str) -> NoReturn:
    raise RuntimeError(
        f"torchaudio.compliance.kaldi.{name} is not available: this is the voice-torchaudio-stub "
        "(CPU installs only support Qwen3-TTS 12 Hz models; see docs/tts-dependencies.md)"
    )


def fbank(*args: object, **kwargs: object) -> NoReturn:
    _unavailable("fbank")


def mfcc(*args: object, **kwargs: object) -> NoReturn:
    _unavailable("mfcc")


def spectrogram(*args: object, **kwargs: object) -> NoReturn:
    _unavailable("spectrogram")
