"""Audio decoding, analysis and encoding for the voice platform (PyAV/FFmpeg + numpy; no gRPC or protobuf)."""

from voice_common.audio.analysis import (
    AudioAnalysis,
    AudioWarning,
    AudioWarningCode,
    analyse,
)
from voice_common.audio.decoding import (
    AudioDecodeError,
    AudioTooLongError,
    AudioTruncatedError,
    DecodedAudio,
    NoAudioTrackError,
    decode_audio,
    decode_linear16,
    resample,
)
from voice_common.audio.encoding import (
    AudioEncoding,
    StreamingEncoder,
    encode_audio,
    mime_type_for,
)
from voice_common.audio.reference_audio import (
    ReferenceAudio,
    ReferenceLimits,
    decode_reference_audio,
)

__all__ = [
    "AudioAnalysis",
    "AudioDecodeError",
    "AudioEncoding",
    "AudioTooLongError",
    "AudioTruncatedError",
    "AudioWarning",
    "AudioWarningCode",
    "DecodedAudio",
    "NoAudioTrackError",
    "ReferenceAudio",
    "ReferenceLimits",
    "StreamingEncoder",
    "analyse",
    "decode_audio",
    "decode_linear16",
    "decode_reference_audio",
    "encode_audio",
    "mime_type_for",
    "resample",
]
