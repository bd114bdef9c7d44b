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

__all__ = [
    "AudioAnalysis",
    "AudioDecodeError",
    "AudioEncoding",
    "AudioTooLongError",
    "AudioWarning",
    "AudioWarningCode",
    "DecodedAudio",
    "NoAudioTrackError",
    "StreamingEncoder",
    "analyse",
    "decode_audio",
    "decode_linear16",
    "encode_audio",
    "mime_type_for",
    "resample",
]
