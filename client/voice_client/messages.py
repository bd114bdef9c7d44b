"""Requests built from Python values and results read from responses: the part the sync and asyncio clients
share, free of any transport."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, TypeAlias

from google.protobuf import duration_pb2, timestamp_pb2

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.audio.v1 import audio_pb2
from voice.profiles.v1.profiles_service_pb2 import AudioStreamHeader
from voice.tts.v1 import tts_service_pb2 as tts_pb

# Uploads and live audio go out in pieces this size: well under any message limit, large enough that per-message
# overhead does not count.
CHUNK_BYTES = 64 * 1024

ENCODINGS: dict[str, audio_pb2.AudioEncoding] = {
    "linear16": audio_pb2.AUDIO_ENCODING_LINEAR16,
    "pcm": audio_pb2.AUDIO_ENCODING_LINEAR16,
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "ogg_opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
    "opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
    "mp3": audio_pb2.AUDIO_ENCODING_MP3,
    "aac": audio_pb2.AUDIO_ENCODING_AAC,
}
MIME_TYPES: dict[audio_pb2.AudioEncoding, str] = {
    audio_pb2.AUDIO_ENCODING_LINEAR16: "audio/L16",
    audio_pb2.AUDIO_ENCODING_WAV: "audio/wav",
    audio_pb2.AUDIO_ENCODING_FLAC: "audio/flac",
    audio_pb2.AUDIO_ENCODING_OGG_OPUS: "audio/ogg",
    audio_pb2.AUDIO_ENCODING_MP3: "audio/mpeg",
    audio_pb2.AUDIO_ENCODING_AAC: "audio/aac",
}

# An encoding by name ("wav") or value (audio_pb2.AUDIO_ENCODING_WAV); a string because the enum is no class at
# run time.
Encoding: TypeAlias = "str | audio_pb2.AudioEncoding"
AudioSource: TypeAlias = bytes | str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class Progress:
    """How far a transfer is: ``done_bytes`` of ``total_bytes`` (None when unknown: a stream, a pipe), and for
    audio the seconds received or sent when the format tells them (LINEAR16, or the server's header)."""

    done_bytes: int
    total_bytes: int | None = None
    audio_seconds: float | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class ReferenceVoice:
    """A voice cloned from a clip sent with the request (no profile): the audio (bytes, a path or a binary file)
    in any format a sample may have, and what it says (empty: the speaker's timbre alone)."""

    audio: AudioSource
    transcript: str = ""


@dataclass(frozen=True)
class SynthesisResult:
    """The whole audio of a Synthesize call, its format and the summary (seed, duration, generation id, timings)."""

    audio: bytes
    format: audio_pb2.AudioFormat
    summary: tts_pb.SynthesisSummary

    @property
    def sample_rate_hertz(self) -> int:
        return self.format.sample_rate_hertz

    @property
    def mime_type(self) -> str:
        return mime_type(self.format.encoding)


@dataclass(frozen=True)
class DownloadedAudio:
    """A stored sample's or generation's audio: the header (format, MIME type, duration) and, when no destination
    was given, the bytes (else empty, and ``size_bytes`` says how many were written)."""

    format: audio_pb2.AudioFormat
    mime_type: str
    duration_seconds: float
    size_bytes: int
    data: bytes = b""


def audio_encoding(value: Encoding) -> audio_pb2.AudioEncoding:
    """An encoding by name (``wav``, ``flac``, ``mp3``, ``ogg_opus``/``opus``, ``aac``, ``linear16``/``pcm``) or value."""
    if isinstance(value, str):
        try:
            return ENCODINGS[value.lower()]
        except KeyError:
            raise ValueError(f"unknown audio encoding {value!r}: one of {', '.join(ENCODINGS)}") from None
    return value


def mime_type(encoding: audio_pb2.AudioEncoding) -> str:
    return MIME_TYPES.get(encoding, "application/octet-stream")


def audio_format(encoding: Encoding, sample_rate_hertz: int) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(encoding=audio_encoding(encoding), sample_rate_hertz=sample_rate_hertz)


def linear16_seconds(byte_count: int, audio: audio_pb2.AudioFormat | None) -> float | None:
    """Seconds of audio in ``byte_count`` bytes of raw 16-bit PCM; None for other encodings (compressed)."""
    if audio is None or audio.encoding != audio_pb2.AUDIO_ENCODING_LINEAR16:
        return None
    rate = audio.sample_rate_hertz or 24000
    return byte_count / (2 * rate * max(1, audio.channels))


def expected_bytes(header: AudioStreamHeader) -> int | None:
    """The size of a download whose header announces raw or WAV PCM (None for compressed audio)."""
    rate = header.format.sample_rate_hertz or 24000
    pcm = round(header.duration_seconds * rate) * 2 * max(1, header.format.channels)
    if header.format.encoding == audio_pb2.AUDIO_ENCODING_LINEAR16:
        return pcm
    if header.format.encoding == audio_pb2.AUDIO_ENCODING_WAV and header.mime_type != "":
        return pcm + 44
    return None


def duration(value: float | timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(value if isinstance(value, timedelta) else timedelta(seconds=value))
    return message


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def is_resource_id(value: str) -> bool:
    """Whether ``value`` is spelt like the ids the server returns (a UUID), as opposed to a profile name."""
    if len(value) > 45:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def read_all(source: AudioSource) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    return source.read()


def file_name_of(source: AudioSource) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).name
    name = getattr(source, "name", "")
    return Path(name).name if isinstance(name, str) else ""


class UploadSource:
    """The bytes of an upload, readable again for a retry: a path is reopened, bytes are reread, a binary file
    object is sought back to where it started (one that cannot seek is sent once: ``rewindable`` is False)."""

    def __init__(self, source: AudioSource, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.source = source
        self.chunk_bytes = chunk_bytes
        self.start: int | None = None
        self.total_bytes: int | None = None
        if isinstance(source, bytes):
            self.total_bytes = len(source)
        elif isinstance(source, str | os.PathLike):
            self.total_bytes = Path(source).stat().st_size
        else:
            try:
                self.start = source.tell() if source.seekable() else None
            except (OSError, ValueError):
                self.start = None
            if self.start is not None:
                end = source.seek(0, os.SEEK_END)
                source.seek(self.start)
                self.total_bytes = end - self.start
        self.sends = 0

    @property
    def rewindable(self) -> bool:
        return isinstance(self.source, bytes | str | os.PathLike) or self.start is not None

    def chunks(self, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """The bytes in pieces, telling ``progress`` after each; from the start again on every call."""
        self.sends += 1
        done = 0
        if isinstance(self.source, bytes):
            for offset in range(0, len(self.source), self.chunk_bytes):
                piece = self.source[offset : offset + self.chunk_bytes]
                done += len(piece)
                yield piece
                if progress is not None:
                    progress(Progress(done, self.total_bytes))
            return
        if isinstance(self.source, str | os.PathLike):
            with Path(self.source).open("rb") as file:
                yield from self._read(file, progress)
            return
        if self.start is not None:
            self.source.seek(self.start)
        elif self.sends > 1:
            raise RuntimeError("a file object that cannot seek can be sent only once")
        yield from self._read(self.source, progress)

    def _read(self, file: BinaryIO, progress: ProgressCallback | None) -> Iterator[bytes]:
        done = 0
        while piece := file.read(self.chunk_bytes):
            done += len(piece)
            yield piece
            if progress is not None:
                progress(Progress(done, self.total_bytes))


def synthesis_config(
    voice: tts_pb.Voice,
    *,
    language: str,
    seed: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float | None,
    max_new_tokens: int | None,
    encoding: Encoding,
    sample_rate_hertz: int,
    store: bool,
    speed: float | None = None,
) -> tts_pb.SynthesisConfig:
    sampling = tts_pb.SamplingParameters()
    if temperature is not None:
        sampling.temperature = temperature
    if top_k is not None:
        sampling.top_k = top_k
    if top_p is not None:
        sampling.top_p = top_p
    if repetition_penalty is not None:
        sampling.repetition_penalty = repetition_penalty
    if max_new_tokens is not None:
        sampling.max_new_tokens = max_new_tokens
    config = tts_pb.SynthesisConfig(
        voice=voice,
        language=language,
        sampling=sampling,
        output_format=audio_format(encoding, sample_rate_hertz),
        store=store,
    )
    if seed is not None:
        config.seed = seed
    if speed is not None:
        config.speed = speed
    return config


def reference_voice(reference: ReferenceVoice) -> tts_pb.Voice:
    return tts_pb.Voice(
        reference=tts_pb.VoiceReference(audio=read_all(reference.audio), transcript=reference.transcript)
    )


def recognition_options(
    *,
    language: str = "",
    translate: bool = False,
    word_timestamps: bool = False,
    vad_filter: bool | None = None,
    beam_size: int | None = None,
    initial_prompt: str = "",
    hotwords: str = "",
    temperature: float | None = None,
) -> asr_pb.RecognitionOptions:
    options = asr_pb.RecognitionOptions(
        language=language,
        task=asr_pb.TASK_TRANSLATE if translate else asr_pb.TASK_UNSPECIFIED,
        word_timestamps=word_timestamps,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
    )
    if vad_filter is not None:
        options.vad_filter = vad_filter
    if beam_size is not None:
        options.beam_size = beam_size
    if temperature is not None:
        options.temperature = temperature
    return options
