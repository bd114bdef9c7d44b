"""Turning the byte chunks of a live audio stream into 16 kHz mono float32 as they arrive.

A streaming client sends its audio in pieces of any size, cut anywhere (in the middle of a sample, a header or a
compressed frame). Each decoder keeps what it cannot use yet for the next piece and returns the samples that the
bytes so far make whole, so recognition can start long before the stream ends:

* LINEAR16: raw s16le at the client's rate; an odd trailing byte waits for its partner, and a stream resampler
  (soxr) keeps its state between pieces so the result matches resampling the whole signal at once.
* WAV: the RIFF header is parsed here, then the data chunk is treated as PCM like LINEAR16 (FFmpeg would want the
  whole header and hand PCM over in small frames; doing it ourselves is simpler and cheaper).
* FLAC, OGG_OPUS, MP3: FFmpeg's demuxers want a file to read from, not pieces pushed at them. A reader thread
  runs ``av.open`` on a file-like object whose ``read`` blocks until the next piece arrives; :meth:`feed` hands
  the piece over and waits until the demuxer asks for more, i.e. until everything those bytes hold is decoded.

Bytes that are not the declared format raise :class:`StreamDecodeError` ("the audio stream could not be decoded
as MP3: ..."), an InvalidArgument the server reports as INVALID_ARGUMENT.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from typing import Any, Protocol

import av
import av.logging
import numpy as np
import soxr

from voice_asr.transcript import SAMPLE_RATE
from voice_common.audio import AudioDecodeError, AudioEncoding
from voice_common.audio.decoding import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ, check_sample_rate

# FFmpeg would log every corrupt packet of a client's stream to stderr.
av.logging.set_level(None)

_FORMAT_NAMES = {
    AudioEncoding.LINEAR16: "LINEAR16",
    AudioEncoding.WAV: "WAV",
    AudioEncoding.FLAC: "FLAC",
    AudioEncoding.OGG_OPUS: "OGG_OPUS",
    AudioEncoding.MP3: "MP3",
    AudioEncoding.AAC: "AAC",
}
# FFmpeg demuxer names; the format is declared by the client, so nothing is probed.
_DEMUXERS = {
    AudioEncoding.FLAC: "flac",
    AudioEncoding.OGG_OPUS: "ogg",
    AudioEncoding.MP3: "mp3",
    AudioEncoding.AAC: "aac",  # ADTS
}
# A real header is a few hundred bytes; a client sending this much without reaching the samples is not sending
# what it declared.
_MAX_WAV_HEADER_BYTES = 1 << 16
# Compressed audio yields its first samples within a few kilobytes; this much without any means garbage (the MP3
# demuxer, for one, skips bytes looking for a frame sync and would otherwise wait for the end of the stream).
_MAX_BYTES_WITHOUT_AUDIO = 1 << 16
# FFmpeg's find_stream_info reads ahead up to probesize bytes / analyzeduration before av.open returns; with the
# format declared, a little is enough, and more would delay the first samples of a live stream.
_OPEN_OPTIONS = {"protocol_whitelist": "none", "probesize": "4096", "analyzeduration": "0"}
# Seconds close() waits for the reader thread to notice that the stream was abandoned.
_JOIN_TIMEOUT_SECONDS = 5.0

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE

_EMPTY = np.zeros(0, dtype=np.float32)


class StreamDecodeError(AudioDecodeError):
    """The bytes of the stream are not audio in the declared format."""

    def __init__(self, encoding: AudioEncoding, reason: str) -> None:
        super().__init__(f"the audio stream could not be decoded as {_FORMAT_NAMES[encoding]}: {reason}")
        self.encoding = encoding


class StreamDecoder(Protocol):
    """Decodes one stream; not thread-safe (one caller at a time), but any thread may call it."""

    def feed(self, data: bytes) -> np.ndarray:
        """Add the next piece of the stream; returns the 16 kHz mono float32 samples it completes (maybe none)."""
        ...

    def finish(self) -> np.ndarray:
        """The stream has ended: returns the samples still held back, and raises if the stream was incomplete."""
        ...

    def close(self) -> None:
        """Abandon the stream (the client went away); frees the decoder. Safe to call more than once."""
        ...


def open_stream_decoder(encoding: AudioEncoding, sample_rate_hertz: int = 0) -> StreamDecoder:
    """A decoder for a stream in ``encoding``. ``sample_rate_hertz`` is required (8000-48000) for LINEAR16 and
    ignored for containers, whose headers say it. Raises InvalidArgument for a rate out of range."""
    if encoding is AudioEncoding.LINEAR16:
        check_sample_rate(sample_rate_hertz)
        return _PcmDecoder(sample_rate_hertz)
    if encoding is AudioEncoding.WAV:
        return _WavDecoder()
    return _ContainerDecoder(encoding)


def _reason(exc: BaseException) -> str:
    """The useful part of an FFmpeg error ("invalid data found when processing input")."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = str(text).strip().rstrip(".")
    return text[:1].lower() + text[1:]


class _PcmDecoder:
    """Interleaved little-endian PCM (s16 or f32) at any rate and channel count, to 16 kHz mono."""

    def __init__(self, rate: int, channels: int = 1, float32: bool = False) -> None:
        self._dtype = np.dtype("<f4") if float32 else np.dtype("<i2")
        self._scale = np.float32(1.0) if float32 else np.float32(1.0 / 32768.0)
        self._frame_bytes = self._dtype.itemsize * channels
        self._channels = channels
        self._carry = b""  # the start of a sample (frame) cut off at the end of the last piece
        self._resampler: soxr.ResampleStream | None = None
        if rate != SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")

    def feed(self, data: bytes) -> np.ndarray:
        if self._carry:
            data = self._carry + data
        usable = len(data) - len(data) % self._frame_bytes
        self._carry = data[usable:]
        if not usable:
            return _EMPTY
        pcm = np.frombuffer(data, dtype=self._dtype, count=usable // self._dtype.itemsize)
        if self._channels == 1:
            mono = pcm.astype(np.float32)
        else:
            mono = pcm.reshape(-1, self._channels).mean(axis=1, dtype=np.float32)
        mono *= self._scale
        if self._dtype.kind == "f":
            np.nan_to_num(mono, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
            np.clip(mono, -1.0, 1.0, out=mono)
        if self._resampler is None:
            return mono
        return np.asarray(self._resampler.resample_chunk(mono, last=False), dtype=np.float32)

    def finish(self) -> np.ndarray:
        # A dangling partial sample at the very end is a cut-off client, not a wrong format: it holds no audio.
        self._carry = b""
        if self._resampler is None:
            return _EMPTY
        return np.asarray(self._resampler.resample_chunk(_EMPTY, last=True), dtype=np.float32)

    def close(self) -> None:
        self._carry = b""


class _WavDecoder:
    """RIFF/WAVE with 16-bit integer or 32-bit float PCM: the header is parsed here, the samples go to PCM."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._pcm: _PcmDecoder | None = None
        self._remaining: int | None = None  # bytes left in a data chunk of known size; None: to the end

    def _error(self, reason: str) -> StreamDecodeError:
        return StreamDecodeError(AudioEncoding.WAV, reason)

    def _parse_header(self) -> int | None:
        """Offset of the first sample once the header is complete (and the PCM decoder set up); None: need more."""
        data = bytes(self._header)
        if len(data) >= 4 and data[:4] != b"RIFF"[: len(data)]:
            raise self._error("it does not start with a RIFF header")
        if len(data) < 12:
            return None
        if data[8:12] != b"WAVE":
            raise self._error("the RIFF file is not WAVE audio")
        position = 12
        fmt: tuple[int, int, int, int] | None = None
        while position + 8 <= len(data):
            chunk_id = data[position : position + 4]
            (size,) = struct.unpack_from("<I", data, position + 4)
            body = position + 8
            if chunk_id == b"data":
                if fmt is None:
                    raise self._error("the data chunk comes before the fmt chunk")
                self._start(fmt, size)
                return body
            if body + size > len(data):
                return None  # this chunk (fmt, LIST, ...) is not complete yet
            if chunk_id == b"fmt ":
                if size < 16:
                    raise self._error(f"the fmt chunk is too short ({size} bytes)")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
                if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                    (tag,) = struct.unpack_from(
                        "<H", data, body + 24
                    )  # the sub-format GUID starts with the tag
                fmt = (tag, channels, rate, bits)
            position = body + size + (size & 1)  # chunks are padded to an even size
        return None

    def _start(self, fmt: tuple[int, int, int, int], size: int) -> None:
        tag, channels, rate, bits = fmt
        if (tag, bits) not in ((_WAVE_FORMAT_PCM, 16), (_WAVE_FORMAT_IEEE_FLOAT, 32)):
            raise self._error(
                f"it holds {bits}-bit samples of format tag {tag}; send 16-bit PCM (or 32-bit float) WAV"
            )
        if not 1 <= channels <= 8:
            raise self._error(f"the header declares {channels} channels")
        if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
            # Not check_sample_rate(): that blames the config field, and here the header is at fault.
            raise self._error(
                f"the header declares a sample rate of {rate} Hz; "
                f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz is accepted"
            )
        self._pcm = _PcmDecoder(rate, channels, float32=tag == _WAVE_FORMAT_IEEE_FLOAT)
        # Streaming writers put 0xFFFFFFFF (or 0) in the size fields: the samples then run to the end.
        self._remaining = None if size in (0, 0xFFFFFFFF) else size

    def feed(self, data: bytes) -> np.ndarray:
        if self._pcm is None:
            self._header += data
            start = self._parse_header()
            if start is None:
                if len(self._header) > _MAX_WAV_HEADER_BYTES:
                    raise self._error(f"no data chunk in the first {_MAX_WAV_HEADER_BYTES} bytes")
                return _EMPTY
            data = bytes(self._header[start:])
            self._header.clear()
        assert self._pcm is not None
        if self._remaining is not None:
            # Chunks after the data chunk (LIST, id3) are metadata, not samples.
            data = data[: self._remaining]
            self._remaining -= len(data)
        return self._pcm.feed(data)

    def finish(self) -> np.ndarray:
        if self._pcm is None:
            reason = "the stream is empty" if not self._header else "the stream ends before the audio data"
            raise self._error(reason)
        return self._pcm.finish()

    def close(self) -> None:
        self._header.clear()
        if self._pcm is not None:
            self._pcm.close()


class _Abandoned(Exception):
    """Raised inside the reader thread's read() when the stream is closed, to unwind FFmpeg."""


class _ContainerDecoder:
    """FLAC, Ogg Opus or MP3 through FFmpeg, with a reader thread that blocks on the arriving pieces."""

    def __init__(self, encoding: AudioEncoding) -> None:
        self._encoding = encoding
        self._cond = threading.Condition()
        self._pending: deque[bytes] = deque()
        self._eof = False  # finish(): read() returns b"" once the pending bytes are used up
        self._abandoned = False
        self._starving = False  # the reader waits in read() with nothing pending: all given bytes are decoded
        self._done = False  # the reader thread has ended (EOF, error or abandoned)
        self._error: BaseException | None = None
        self._out: list[np.ndarray] = []
        self._bytes_fed = 0
        self._samples_out = 0
        self._thread: threading.Thread | None = None

    # --- the file object FFmpeg reads (called on the reader thread) ---

    def read(self, size: int) -> bytes:
        with self._cond:
            while not self._pending and not self._eof and not self._abandoned:
                self._starving = True
                self._cond.notify_all()
                self._cond.wait()
            self._starving = False
            if self._abandoned:
                raise _Abandoned()
            if not self._pending:
                return b""
            piece = self._pending.popleft()
            if len(piece) > size:
                self._pending.appendleft(piece[size:])
                piece = piece[:size]
            return piece

    def _emit(self, frames: list[av.AudioFrame]) -> None:
        arrays = [frame.to_ndarray().reshape(-1).astype(np.float32, copy=False) for frame in frames]
        arrays = [a for a in arrays if a.size]
        if arrays:
            with self._cond:
                self._out.extend(arrays)
                self._samples_out += sum(a.size for a in arrays)

    def _run(self) -> None:
        try:
            container: Any = av.open(
                self,
                mode="r",
                format=_DEMUXERS[self._encoding],
                options=dict(_OPEN_OPTIONS),
                buffer_size=4096,
            )
            with container:
                if not container.streams.audio:
                    raise StreamDecodeError(self._encoding, "the stream holds no audio track")
                stream = container.streams.audio[0]
                # Downmix to the average of the channels (FFmpeg's default centre mix can exceed full scale).
                resampler = av.AudioResampler(
                    format="flt", layout="mono", rate=SAMPLE_RATE, options={"rematrix_maxval": "1.0"}
                )
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        self._emit(resampler.resample(frame))
                self._emit(resampler.resample(None))
        except _Abandoned:
            pass
        except BaseException as exc:
            with self._cond:
                if not self._abandoned:
                    self._error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    # --- the caller's side ---

    def _take(self) -> np.ndarray:
        """Wait until the reader has used every byte given (or ended); the samples decoded since the last call."""
        with self._cond:
            while not self._done and not (self._starving and not self._pending):
                self._cond.wait()
            error = self._error
            out, self._out = self._out, []
        if error is not None:
            if isinstance(error, StreamDecodeError):
                raise error
            if isinstance(error, MemoryError) and not isinstance(error, av.FFmpegError):
                raise error
            raise StreamDecodeError(self._encoding, _reason(error)) from error
        if not out:
            return _EMPTY
        return np.concatenate(out) if len(out) > 1 else out[0]

    def feed(self, data: bytes) -> np.ndarray:
        if self._eof or self._abandoned:
            raise RuntimeError("feed() after finish() or close()")
        if not data:
            return _EMPTY
        with self._cond:
            self._pending.append(bytes(data))
            self._bytes_fed += len(data)
            self._starving = False  # until the reader has used this piece and asks again
            self._cond.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="asr-stream-decoder", daemon=True)
            self._thread.start()
        out = self._take()
        if self._samples_out == 0 and self._bytes_fed > _MAX_BYTES_WITHOUT_AUDIO:
            self.close()
            raise StreamDecodeError(
                self._encoding, f"no audio could be decoded from the first {self._bytes_fed} bytes"
            )
        return out

    def finish(self) -> np.ndarray:
        if self._thread is None:
            raise StreamDecodeError(self._encoding, "the stream is empty")
        with self._cond:
            self._eof = True
            self._starving = False  # the reader wakes to see EOF, flushes, and ends (done)
            self._cond.notify_all()
        out = self._take()
        self._thread.join(_JOIN_TIMEOUT_SECONDS)
        if self._samples_out == 0:
            raise StreamDecodeError(self._encoding, "the stream holds no decodable audio")
        return out

    def close(self) -> None:
        with self._cond:
            self._abandoned = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT_SECONDS)
