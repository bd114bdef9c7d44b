"""The API's ``voice.audio.v1.AudioEncoding`` and the domain's ``AudioEncoding``, mapped once for every servicer.

Servicer-side only: domain code uses ``voice_common.audio`` and never sees protobuf.
"""

from __future__ import annotations

from voice.audio.v1 import audio_pb2
from voice_common.audio import AudioEncoding
from voice_common.errors import InvalidArgument

_PAIRS: list[tuple[audio_pb2.AudioEncoding, AudioEncoding]] = [
    (audio_pb2.AUDIO_ENCODING_LINEAR16, AudioEncoding.LINEAR16),
    (audio_pb2.AUDIO_ENCODING_WAV, AudioEncoding.WAV),
    (audio_pb2.AUDIO_ENCODING_FLAC, AudioEncoding.FLAC),
    (audio_pb2.AUDIO_ENCODING_OGG_OPUS, AudioEncoding.OGG_OPUS),
    (audio_pb2.AUDIO_ENCODING_MP3, AudioEncoding.MP3),
]
_FROM_PROTO: dict[int, AudioEncoding] = dict(_PAIRS)
_TO_PROTO: dict[AudioEncoding, audio_pb2.AudioEncoding] = {ours: theirs for theirs, ours in _PAIRS}


def encoding_from_proto(value: int, field: str) -> AudioEncoding | None:
    """The domain encoding; None for AUDIO_ENCODING_UNSPECIFIED; INVALID_ARGUMENT naming ``field`` otherwise."""
    if value == audio_pb2.AUDIO_ENCODING_UNSPECIFIED:
        return None
    if value not in _FROM_PROTO:
        raise InvalidArgument(f"{field} {value} is not a known AudioEncoding", field=field)
    return _FROM_PROTO[value]


def encoding_to_proto(encoding: AudioEncoding | None) -> audio_pb2.AudioEncoding:
    return _TO_PROTO[encoding] if encoding is not None else audio_pb2.AUDIO_ENCODING_UNSPECIFIED
