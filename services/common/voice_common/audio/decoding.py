"""Decode uploaded audio into float32 mono samples at a fixed rate.

Anything FFmpeg (through PyAV) can demux and decode is accepted: WAV, MP3, M4A/AAC, OGG Opus/Vorbis, FLAC,
and video containers such as MP4, MOV, WebM and MKV, of which only the audio track is used. Every failure is
raised as an :class:`~voice_common.errors.InvalidArgument` subclass with a message the uploader can act on.

Hardening for untrusted bytes:

* the data is read from memory only; ``protocol_whitelist`` names a protocol that does not exist, so
  demuxers that open other resources (``concat``, ``hls``, MOV external references, ...) cannot read local
  files or the network;
* only packets of the chosen audio stream are decoded (video packets are read but never decoded);
* ``max_seconds`` stops decoding as soon as the decoded audio passes the limit, so a tiny file that decodes
  to hours of audio cannot exhaust memory;
* FFmpeg's own logging is switched off (it would otherwise print to stderr for every corrupt packet).
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Any

import av
import av.logging
import numpy as np
import soxr
from av.audio.stream import AudioStream

from voice_common.errors import InvalidArgument

# FFmpeg logs every corrupt packet of an upload to stderr; nothing in it is useful to the service's own logs.
av.logging.set_level(None)

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000
SAMPLE_RATE_FIELD = "format.sample_rate_hertz"

SUPPORTED_UPLOADS_HINT = (
    "Upload WAV, MP3, M4A/AAC, OGG, FLAC, or an MP4/MOV/WebM/MKV video with an audio track"
)

# Demuxer/format-context options for every upload. No protocol is needed (the bytes come through PyAV's
# in-memory I/O), so nested opens by playlist-like demuxers are refused.
_OPEN_OPTIONS = {"protocol_whitelist": "none"}
# Seconds FFmpeg may block in one open/read call before it is interrupted (a safety net).
_IO_TIMEOUT_SECONDS = 30.0
# A stream may have a few corrupt packets (they are skipped, as players do); more bad packets than good
# frames, beyond this many, means the track is not really audio.
_MAX_TOLERATED_BAD_PACKETS = 8
# Downmix to the average of the channels (not FFmpeg's default +3 dB centre mix, which can exceed full scale).
_DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}
# Samples per frame pushed through the resampler by :func:`resample` (large frames are slower: cache misses).
_RESAMPLE_CHUNK = 8192


class AudioDecodeError(InvalidArgument):
    """The upload is empty, not audio, corrupt, or in a format FFmpeg cannot decode."""


class NoAudioTrackError(AudioDecodeError):
    """The container was read but holds no audio stream (for example a video-only MP4)."""


class AudioTooLongError(InvalidArgument):
    """The decoded audio is longer than the caller's limit; raised as soon as decoding passes it."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__(
            f"the audio is longer than the limit of {max_seconds:g} seconds; "
            f"trim it to at most {max_seconds:g} seconds and upload it again"
        )
        self.max_seconds = max_seconds


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, 1-D, values in [-1, 1]
    sample_rate: int  # the target rate the samples were resampled to
    source_container: str  # FFmpeg's demuxer name, e.g. "wav", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    source_codec: str  # FFmpeg's decoder name, e.g. "pcm_s16le", "aac", "opus"
    source_sample_rate: int
    source_channels: int

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def check_sample_rate(rate: int, *, field: str = SAMPLE_RATE_FIELD) -> None:
    """Raise InvalidArgument unless ``rate`` is in the range the platform accepts for client-given rates."""
    if (
        not isinstance(rate, int)
        or isinstance(rate, bool)
        or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ
    ):
        raise InvalidArgument(
            f"sample rate {rate!r} Hz is not supported; use a rate from {MIN_SAMPLE_RATE_HZ} to "
            f"{MAX_SAMPLE_RATE_HZ} Hz (for example 16000, 24000 or 48000)",
            field=field,
        )


def _reason(exc: BaseException) -> str:
    """The useful part of an FFmpeg error ("Invalid data found when processing input"), without file names."""
    if isinstance(exc, EOFError):
        return "the data ends unexpectedly (the file may be truncated)"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    text = str(text).strip().rstrip(".")
    return text[:1].lower() + text[1:]


def _reraise_if_out_of_memory(exc: BaseException) -> None:
    """Let this process running out of memory propagate; FFmpeg's ENOMEM (av.error.MemoryError, also a
    MemoryError) means a corrupt size field asked for an absurd allocation, which is the file's fault."""
    if isinstance(exc, MemoryError) and not isinstance(exc, av.FFmpegError):
        raise exc


def _not_decodable(exc: BaseException) -> AudioDecodeError:
    return AudioDecodeError(
        f"the file could not be decoded as audio (tried FFmpeg's demuxers): {_reason(exc)}. "
        f"{SUPPORTED_UPLOADS_HINT}"
    )


def _stream_description(stream: av.stream.Stream) -> str:
    codec = getattr(stream.codec_context, "name", None) if stream.codec_context is not None else None
    return f"{stream.type} {codec or 'unknown codec'}"


def _new_resampler(target_rate: int) -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=target_rate, options=_DOWNMIX_OPTIONS)


class _MonoAccumulator:
    """Resamples decoded frames to float32 mono at ``target_rate`` and collects them, enforcing the limit."""

    def __init__(self, target_rate: int, max_seconds: float | None) -> None:
        self.target_rate = target_rate
        self.max_seconds = max_seconds
        self.max_samples = None if max_seconds is None else math.floor(max_seconds * target_rate)
        self.chunks: list[np.ndarray] = []
        self.total = 0
        self._resampler: av.AudioResampler | None = None

    def _collect(self, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            chunk = out.to_ndarray().reshape(-1)
            self.chunks.append(chunk)
            self.total += chunk.shape[0]
        if self.max_samples is not None and self.total > self.max_samples:
            assert self.max_seconds is not None
            raise AudioTooLongError(self.max_seconds)

    def push(self, frame: av.AudioFrame) -> None:
        if self._resampler is None:
            self._resampler = _new_resampler(self.target_rate)
        try:
            frames = self._resampler.resample(frame)
        except ValueError:
            # The stream changed rate, layout or sample format mid-way (legal in MP3, AAC, ...): finish the
            # old resampler and start a new one for the new parameters.
            self.flush()
            self._resampler = _new_resampler(self.target_rate)
            frames = self._resampler.resample(frame)
        self._collect(frames)

    def flush(self) -> None:
        if self._resampler is not None:
            self._collect(self._resampler.resample(None))
            self._resampler = None

    def samples(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        out = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0].copy()
        # Lossy decoders overshoot slightly past full scale; the contract is [-1, 1].
        np.clip(out, -1.0, 1.0, out=out)
        return out.astype(np.float32, copy=False)


def decode_audio(data: bytes, *, target_rate: int = 24000, max_seconds: float | None = None) -> DecodedAudio:
    """Decode an uploaded file to float32 mono at ``target_rate``.

    The best audio stream of the container is used (other streams are not decoded). Raises AudioDecodeError
    (undecodable data), NoAudioTrackError (no audio stream) or AudioTooLongError (longer than
    ``max_seconds``). A few corrupt packets are skipped, and a file whose end is cut off gives the audio
    before the cut, as players do.
    """
    if target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    if max_seconds is not None and max_seconds < 0:
        raise ValueError(f"max_seconds must not be negative, got {max_seconds}")
    if not data:
        raise AudioDecodeError("the file is empty")
    fast = _decode_pcm_wav(data, target_rate, max_seconds)
    if fast is not None:
        return fast
    return _decode_with_ffmpeg(data, target_rate, max_seconds)


def _decode_with_ffmpeg(data: bytes, target_rate: int, max_seconds: float | None) -> DecodedAudio:
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            options=dict(_OPEN_OPTIONS),
            metadata_errors="replace",
            timeout=(_IO_TIMEOUT_SECONDS, _IO_TIMEOUT_SECONDS),
        )
    except Exception as exc:  # untrusted input: any failure to open is the file's fault
        _reraise_if_out_of_memory(exc)
        raise _not_decodable(exc) from exc

    with container:
        try:
            audio_streams = list(container.streams.audio)
            if not audio_streams:
                if not len(container.streams):
                    raise AudioDecodeError(
                        f"the file could not be decoded as audio: FFmpeg found no streams in it "
                        f"({container.format.name} format). {SUPPORTED_UPLOADS_HINT}"
                    )
                found = ", ".join(_stream_description(s) for s in container.streams)
                raise NoAudioTrackError(
                    f"the file has no audio track (found streams: {found}); "
                    "upload a recording or a video that contains sound"
                )
            stream: AudioStream = audio_streams[0]
            try:
                best = container.streams.best("audio")
            except Exception:
                best = None
            if isinstance(best, AudioStream):
                stream = best
            codec_context = stream.codec_context
            if codec_context is None:
                raise AudioDecodeError(
                    f"the audio track uses a codec this server cannot decode. {SUPPORTED_UPLOADS_HINT}"
                )
            codec_name = codec_context.name
            source_rate = codec_context.sample_rate or 0
            source_channels = codec_context.channels or 0
            source_container = container.format.name
        except AudioDecodeError:
            raise
        except Exception as exc:
            raise _not_decodable(exc) from exc

        acc = _MonoAccumulator(target_rate, max_seconds)
        decoded_frames = 0
        bad_packets = 0
        last_error: BaseException | None = None
        first_frame_seen = False
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except Exception as exc:
                _reraise_if_out_of_memory(exc)
                # The container is corrupt or cut off from here on: keep what was decoded before, if any.
                last_error = exc
                try:  # drain the decoder
                    frames = codec_context.decode(None)
                except Exception:
                    frames = []
                for frame in frames:
                    acc.push(frame)
                    decoded_frames += 1
                break
            try:
                frames = codec_context.decode(packet)
            except Exception as exc:
                _reraise_if_out_of_memory(exc)
                bad_packets += 1
                last_error = exc
                if bad_packets > _MAX_TOLERATED_BAD_PACKETS and bad_packets > decoded_frames:
                    raise AudioDecodeError(
                        f"the audio track is corrupt ({bad_packets} packets could not be decoded: "
                        f"{_reason(exc)}). {SUPPORTED_UPLOADS_HINT}"
                    ) from exc
                continue
            for frame in frames:
                if not first_frame_seen:
                    # The decoded frame is the truth (e.g. HE-AAC doubles the rate its header declares).
                    first_frame_seen = True
                    source_rate = frame.sample_rate or source_rate
                    source_channels = frame.layout.nb_channels or source_channels
                acc.push(frame)
                decoded_frames += 1
        acc.flush()

    if acc.total == 0:
        detail = f": {_reason(last_error)}" if last_error is not None else ""
        raise AudioDecodeError(
            f"the file's {codec_name} audio track contains no decodable audio{detail}. "
            f"{SUPPORTED_UPLOADS_HINT}"
        )
    return DecodedAudio(
        samples=acc.samples(),
        sample_rate=target_rate,
        source_container=source_container,
        source_codec=codec_name,
        source_sample_rate=source_rate,
        source_channels=source_channels,
    )


_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def _decode_pcm_wav(data: bytes, target_rate: int, max_seconds: float | None) -> DecodedAudio | None:
    """The common case, a plain 16-bit integer or 32-bit float PCM WAV, straight through numpy.

    FFmpeg hands PCM over in small frames, and the per-frame overhead made a 5-minute WAV cost 0.1 s before any
    real work. Returns None for anything else (other sample formats, odd layouts, damaged headers), which then
    goes through FFmpeg like every other format.
    """
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position = 12
    fmt: tuple[int, int, int, int] | None = None
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = position + 8
        if chunk_id == b"fmt " and size >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack_from("<H", data, body + 24)  # the sub-format GUID starts with the tag
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            tag, channels, rate, bits = fmt
            if channels < 1 or not 1000 <= rate <= 384_000:
                return None
            dtype: np.dtype[Any]
            if (tag, bits) == (_WAVE_FORMAT_PCM, 16):
                dtype, scale = np.dtype("<i2"), np.float32(1.0 / 32768.0)
            elif (tag, bits) == (_WAVE_FORMAT_IEEE_FLOAT, 32):
                dtype, scale = np.dtype("<f4"), np.float32(1.0)
            else:
                return None
            # A streamed WAV says 0xFFFFFFFF, a cut one claims more than it holds: take what is there.
            available = min(size, len(data) - body)
            frame_bytes = dtype.itemsize * channels
            frames = available // frame_bytes
            if frames == 0:
                return None
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioTooLongError(max_seconds)
            pcm = np.frombuffer(data, dtype=dtype, count=frames * channels, offset=body)
            mono = (
                pcm.astype(np.float32)
                if channels == 1
                else pcm.reshape(-1, channels).mean(axis=1, dtype=np.float32)
            )
            if scale != 1.0:
                mono *= scale
            samples = resample(mono, rate, target_rate)
            if dtype.kind == "f" and not np.isfinite(samples).all():
                return None  # NaN or infinity in a float WAV: let FFmpeg's path judge it
            np.clip(samples, -1.0, 1.0, out=samples)
            return DecodedAudio(
                samples=samples,
                sample_rate=target_rate,
                source_container="wav",
                source_codec="pcm_s16le" if dtype.kind == "i" else "pcm_f32le",
                source_sample_rate=rate,
                source_channels=channels,
            )
        position = body + size + (size & 1)  # chunks are padded to an even size
    return None


def decode_linear16(
    data: bytes, sample_rate: int, *, target_rate: int = 24000, max_seconds: float | None = None
) -> DecodedAudio:
    """Decode raw little-endian signed 16-bit mono PCM (no header) recorded at ``sample_rate``."""
    check_sample_rate(sample_rate)
    if target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    if not data:
        raise AudioDecodeError("the file is empty")
    if len(data) % 2:
        raise AudioDecodeError(
            f"LINEAR16 audio must be 16-bit samples (an even number of bytes), got {len(data)} bytes; "
            "send raw little-endian signed 16-bit mono PCM without a header, or upload a WAV file"
        )
    n = len(data) // 2
    if max_seconds is not None and n > max_seconds * sample_rate:
        raise AudioTooLongError(max_seconds)
    pcm = np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1.0 / 32768.0)
    return DecodedAudio(
        samples=resample(pcm, sample_rate, target_rate),
        sample_rate=target_rate,
        source_container="raw",
        source_codec="pcm_s16le",
        source_sample_rate=sample_rate,
        source_channels=1,
    )


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 mono samples with libsoxr (high quality, and ~3x faster than libswresample on a
    5-minute clip, which matters on the upload path).

    Returns a new float32 array of about ``len(samples) * to_rate / from_rate`` samples; the input itself (as
    float32) when the rates are equal.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    x = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
    if from_rate == to_rate or x.size == 0:
        return x
    return np.asarray(soxr.resample(x, from_rate, to_rate, quality="HQ"), dtype=np.float32)
