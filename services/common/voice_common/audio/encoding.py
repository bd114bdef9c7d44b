"""Encode float32 mono samples to the platform's output formats, as whole files or as a stream of pieces.

Sample conversion to 16 bits is the same everywhere (and matches FFmpeg's): clip to [-1, 1], scale by
32768, round to nearest, clip to [-32768, 32767]. Decoding s16 back with
:func:`~voice_common.audio.decoding.decode_audio` divides by 32768, so LINEAR16, WAV and FLAC round-trip
exactly at the same rate.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import soxr
from av.audio.stream import AudioStream

from voice_common.audio.decoding import SAMPLE_RATE_FIELD, check_sample_rate, resample
from voice_common.errors import InvalidArgument


class AudioEncoding(enum.Enum):
    """Output encodings; mirrors the API's AudioEncoding enum (the server maps between the two)."""

    LINEAR16 = "linear16"  # raw little-endian s16 mono, no header
    WAV = "wav"  # RIFF PCM s16 mono
    FLAC = "flac"  # FLAC s16 (lossless)
    OGG_OPUS = "ogg_opus"
    MP3 = "mp3"
    AAC = "aac"  # AAC-LC in ADTS frames


_MIME_TYPES = {
    AudioEncoding.LINEAR16: "audio/L16",
    AudioEncoding.WAV: "audio/wav",
    AudioEncoding.FLAC: "audio/flac",
    AudioEncoding.OGG_OPUS: "audio/ogg",
    AudioEncoding.MP3: "audio/mpeg",
    AudioEncoding.AAC: "audio/aac",
}

# Rates the encoders accept (libopus and libmp3lame refuse others).
OPUS_SAMPLE_RATES: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)
MP3_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# AAC's sampling frequency index (ADTS headers name one of these) within the platform's 8-48 kHz.
AAC_SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Ogg pages are closed at least this often (microseconds) when streaming, so a listener gets audio every
# ~100 ms instead of FFmpeg's default of one page per second.
_STREAMING_OGG_PAGE_DURATION_US = 100_000
# Bytes PyAV's I/O layer buffers before handing them on; small for streaming so pieces flow out promptly.
_STREAMING_IO_BUFFER = 4096


def mime_type_for(encoding: AudioEncoding) -> str:
    return _MIME_TYPES[encoding]


def check_output_rate(encoding: AudioEncoding, rate: int, *, field: str = SAMPLE_RATE_FIELD) -> None:
    """Raise InvalidArgument unless ``encoding`` can be produced at ``rate`` Hz."""
    check_sample_rate(rate, field=field)
    allowed = {
        AudioEncoding.OGG_OPUS: OPUS_SAMPLE_RATES,
        AudioEncoding.MP3: MP3_SAMPLE_RATES,
        AudioEncoding.AAC: AAC_SAMPLE_RATES,
    }.get(encoding)
    if allowed is not None and rate not in allowed:
        names = {
            AudioEncoding.OGG_OPUS: "OGG_OPUS (Opus)",
            AudioEncoding.MP3: "MP3",
            AudioEncoding.AAC: "AAC",
        }
        rates = ", ".join(str(r) for r in allowed)
        raise InvalidArgument(
            f"{names[encoding]} cannot be encoded at {rate} Hz; use one of {rates} Hz",
            field=field,
        )


def to_s16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> little-endian int16: clip, scale by 32768, round to nearest (NaN becomes 0)."""
    # In place on one scaled copy: this runs on every stored sample (minutes of audio), so passes count.
    scaled = np.multiply(np.asarray(samples, dtype=np.float32).reshape(-1), np.float32(32768.0))
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=32767.0, neginf=-32768.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    return scaled.astype("<i2")


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """44-byte RIFF/WAVE header for s16 mono PCM; ``data_bytes=None`` writes 0xFFFFFFFF sizes (streaming)."""
    data_size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff_size = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,  # fmt chunk size
        1,  # PCM
        1,  # channels
        sample_rate,
        sample_rate * 2,  # byte rate
        2,  # block align
        16,  # bits per sample
        b"data",
        data_size,
    )


@dataclass(frozen=True)
class _CodecSetup:
    container: str
    codec: str
    sample_format: str
    container_options: dict[str, str]
    streaming_container_options: dict[str, str]


_CODEC_SETUPS = {
    AudioEncoding.FLAC: _CodecSetup("flac", "flac", "s16", {}, {}),
    AudioEncoding.OGG_OPUS: _CodecSetup(
        "ogg", "libopus", "flt", {}, {"page_duration": str(_STREAMING_OGG_PAGE_DURATION_US)}
    ),
    # Streaming MP3: no ID3 tag and no Xing frame (it cannot be filled in without seeking back).
    AudioEncoding.MP3: _CodecSetup(
        "mp3", "libmp3lame", "fltp", {}, {"id3v2_version": "0", "write_xing": "0"}
    ),
    # FFmpeg's native AAC encoder in ADTS framing: every frame carries its own header, so a stream needs no
    # seeking back and any cut at a frame boundary plays.
    AudioEncoding.AAC: _CodecSetup("adts", "aac", "fltp", {}, {}),
}


def _bit_rate(encoding: AudioEncoding, rate: int) -> int:
    if encoding is AudioEncoding.OGG_OPUS:
        return 48_000 if rate >= 24000 else 32_000
    if encoding is AudioEncoding.MP3:
        # MPEG-1 (32-48 kHz), MPEG-2 (16-24 kHz) and MPEG-2.5 (8-12 kHz) have different bit-rate ceilings.
        return 128_000 if rate >= 32000 else 64_000 if rate >= 16000 else 32_000
    if encoding is AudioEncoding.AAC:
        return 96_000 if rate >= 32000 else 64_000 if rate >= 16000 else 32_000
    return 0


class _Sink:
    """A write-only file object: PyAV sees it as not seekable, so muxers write in streaming mode."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


class _PyAVWriter:
    """One mono audio stream muxed by PyAV into ``file`` (BytesIO for whole files, a _Sink for streaming)."""

    def __init__(self, encoding: AudioEncoding, rate: int, file: Any, *, streaming: bool) -> None:
        setup = _CODEC_SETUPS[encoding]
        options = dict(setup.container_options)
        if streaming:
            options.update(setup.streaming_container_options)
            options["flush_packets"] = "1"
        self._format = setup.sample_format
        self._rate = rate
        self._pts = 0
        self._container = av.open(
            file,
            mode="w",
            format=setup.container,
            container_options=options,
            buffer_size=_STREAMING_IO_BUFFER if streaming else 32768,
        )
        try:
            stream = self._container.add_stream(setup.codec, rate=rate, layout="mono", format=self._format)
            assert isinstance(stream, AudioStream)
            self._stream = stream
            bit_rate = _bit_rate(encoding, rate)
            if bit_rate:
                self._stream.bit_rate = bit_rate
            self._stream.time_base = Fraction(1, rate)
        except BaseException:
            self._container.close()
            raise

    def write(self, samples: np.ndarray) -> None:
        """Encode float32 mono samples already at the stream's rate."""
        if samples.size == 0:
            return
        if self._format == "s16":
            array = to_s16(samples)[None, :]
        else:
            array = np.ascontiguousarray(samples, dtype=np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(array, format=self._format, layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._pts
        self._pts += array.shape[1]
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def abort(self) -> None:
        self._container.close()


def _mono_float(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        else:
            raise ValueError(f"expected mono samples (a 1-D array), got shape {x.shape}")
    return np.ascontiguousarray(x)


def encode_audio(
    samples: np.ndarray, sample_rate: int, encoding: AudioEncoding, *, target_rate: int | None = None
) -> bytes:
    """Encode float32 mono ``samples`` at ``sample_rate`` to a whole file in ``encoding`` at ``target_rate``.

    ``target_rate`` defaults to ``sample_rate``. Raises InvalidArgument (field ``format.sample_rate_hertz``)
    for a rate outside 8000..48000 Hz or one the codec does not support (Opus and MP3 have fixed lists).
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    rate = sample_rate if target_rate is None else target_rate
    check_output_rate(encoding, rate)
    x = resample(_mono_float(samples), sample_rate, rate)

    if encoding is AudioEncoding.LINEAR16:
        return to_s16(x).tobytes()
    if encoding is AudioEncoding.WAV:
        pcm = to_s16(x).tobytes()
        return wav_header(rate, len(pcm)) + pcm
    buffer = io.BytesIO()
    writer = _PyAVWriter(encoding, rate, buffer, streaming=False)
    try:
        writer.write(x)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return buffer.getvalue()


class StreamingEncoder:
    """Encodes audio that arrives in pieces; each call returns the encoded bytes that are ready so far.

    The concatenation of every :meth:`encode` result and the final :meth:`flush` is one valid file/stream:
    LINEAR16 is bare s16 PCM; WAV is a header with 0xFFFFFFFF size fields (the usual streaming WAV) then
    PCM; FLAC, OGG_OPUS and MP3 are written by a PyAV muxer in non-seekable (streaming) mode, so FLAC's header
    has no total length and MP3 has no Xing/LAME frame (decoders then keep the encoder delay and the final
    frame's padding: up to ~3 MP3 frames more than the input). Ogg pages are closed every 100 ms. When
    ``output_rate`` differs from ``input_rate`` the audio is resampled by a resampler that keeps its state
    between pieces, so the result matches resampling the whole signal at once.

    Call :meth:`flush` at the end of the audio, or :meth:`close` to abandon the stream. Not thread-safe: use
    one encoder per stream from one task at a time.
    """

    def __init__(self, encoding: AudioEncoding, input_rate: int, output_rate: int | None = None) -> None:
        if input_rate <= 0:
            raise ValueError(f"input_rate must be positive, got {input_rate}")
        self.encoding = encoding
        self.input_rate = input_rate
        self.output_rate = input_rate if output_rate is None else output_rate
        check_output_rate(encoding, self.output_rate)
        # soxr's stream resampler gives what resample() gives on the whole signal, piece by piece.
        self._resampler: soxr.ResampleStream | None = None
        if self.output_rate != input_rate:
            self._resampler = soxr.ResampleStream(
                input_rate, self.output_rate, 1, dtype="float32", quality="HQ"
            )
        self._header_sent = False
        self._closed = False
        self._sink: _Sink | None = None
        self._writer: _PyAVWriter | None = None
        if encoding in _CODEC_SETUPS:
            self._sink = _Sink()
            self._writer = _PyAVWriter(encoding, self.output_rate, self._sink, streaming=True)

    @property
    def mime_type(self) -> str:
        return mime_type_for(self.encoding)

    def _resample(self, samples: np.ndarray | None) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32) if samples is None else samples
        if samples is None:
            return np.asarray(
                self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), np.float32
            )
        if samples.size == 0:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples, last=False), dtype=np.float32)

    def _emit(self, samples: np.ndarray) -> bytes:
        if self._writer is not None:
            self._writer.write(samples)
            assert self._sink is not None
            return self._sink.take()
        header = b""
        if self.encoding is AudioEncoding.WAV and not self._header_sent:
            header = wav_header(self.output_rate, None)
        self._header_sent = True
        return header + to_s16(samples).tobytes()

    def encode(self, samples: np.ndarray) -> bytes:
        """Add float32 mono samples at ``input_rate``; returns the bytes ready so far (possibly b"")."""
        if self._closed:
            raise RuntimeError("StreamingEncoder.encode() called after flush() or close()")
        return self._emit(self._resample(_mono_float(samples)))

    def flush(self) -> bytes:
        """Encode whatever is buffered and close the stream; returns the remaining bytes."""
        if self._closed:
            return b""
        self._closed = True
        out = self._emit(self._resample(None))
        if self._writer is not None:
            self._writer.close()
            assert self._sink is not None
            out += self._sink.take()
        return out

    def close(self) -> None:
        """Abandon the stream (e.g. the client went away) and free the encoder; no more bytes are made."""
        if not self._closed:
            self._closed = True
            if self._writer is not None:
                self._writer.abort()
