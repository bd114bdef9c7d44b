"""Import-only stand-in for torchaudio (see docs/tts-dependencies.md).

qwen_tts imports ``torchaudio.compliance.kaldi`` at import time for its 25 Hz tokenizer, which this
platform never loads; PyPI has no torchaudio build for the CPU torch in use. Anything that really
uses torchaudio fails loudly here instead of silently.
"""

__version__ = "0+stub"


def __getattr__(name: str) -> object:
    raise AttributeError(
        f"torchaudio.{name}: this is the voice-torchaudio-stub, not torchaudio; "
        "install a torchaudio build matching torch to use it (docs/tts-dependencies.md)"
    )
