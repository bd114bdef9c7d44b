"""The API's ``voice.audio.v1.AudioEncoding`` and the domain's ``AudioEncoding``, mapped once for every servicer.

Servicer-side only: domain code uses ``voice_common.audio`` and never sees protobuf.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from voice.audio.v1 import audio_pb2
from voice_common.audio import AudioEncoding
from voice_common.errors import InvalidArgument, Unavailable

_PAIRS: list[tuple[audio_pb2.AudioEncoding, AudioEncoding]] = [
    (audio_pb2.AUDIO_ENCODING_LINEAR16, AudioEncoding.LINEAR16),
    (audio_pb2.AUDIO_ENCODING_WAV, AudioEncoding.WAV),
    (audio_pb2.AUDIO_ENCODING_FLAC, AudioEncoding.FLAC),
    (audio_pb2.AUDIO_ENCODING_OGG_OPUS, AudioEncoding.OGG_OPUS),
    (audio_pb2.AUDIO_ENCODING_MP3, AudioEncoding.MP3),
    (audio_pb2.AUDIO_ENCODING_AAC, AudioEncoding.AAC),
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


async def read_linear16_stream(messages: AsyncIterable[Any], rate: int, what: str) -> bytes:
    """The bytes of a platform audio stream (a ``header`` message, then ``chunk`` messages: GetSampleAudio,
    GetGenerationAudio) that was asked for as LINEAR16 at ``rate``; Unavailable if the sender broke that promise.
    ``what`` names the audio in messages ("sample 'id'")."""
    parts: list[bytes] = []
    header_seen = False
    async for message in messages:
        if message.HasField("header"):
            header_seen = True
            received = message.header.format
            if received.encoding != audio_pb2.AUDIO_ENCODING_LINEAR16 or received.sample_rate_hertz != rate:
                raise Unavailable(
                    f"the profile service sent {what} as {audio_pb2.AudioEncoding.Name(received.encoding)} at "
                    f"{received.sample_rate_hertz} Hz instead of LINEAR16 at {rate} Hz"
                )
        elif message.HasField("chunk"):
            if not header_seen:
                raise Unavailable(f"the profile service sent {what}'s audio without a header first")
            parts.append(message.chunk.data)
    return b"".join(parts)
