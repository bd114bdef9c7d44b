"""Stand-in for torchaudio.compliance: only the module name ``kaldi`` exists."""

from . import kaldi

__all__ = ["kaldi"]
