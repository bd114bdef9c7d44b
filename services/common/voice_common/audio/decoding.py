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

Cut-off uploads (an interrupted transfer or export): a file that ends early decodes up to the cut, as players do,
and :attr:`DecodedAudio.truncation` says so, except for a WAV whose data chunk holds less than its header declares
(by more than one frame), which is refused (:class:`AudioTruncatedError`): its header states the exact length, so
the cut is certain. A WAV whose data size is 0, 0xFFFFFFFF (FFmpeg and others streaming to a pipe) or SoX's
0x7FFFF000 declares no length; it is read to the end of the file, with a ``truncation`` note that no cut could be
checked for. For other formats a cut is noticed where the file lets us: a duration stated in its header (FLAC
STREAMINFO, MP4/MOV, Matroska/WebM, an MP3's Xing/Info/VBRI tag) that the audio falls short of, a demuxer error,
or packets at the end that do not decode. An MP3 without such a tag, raw AAC and Ogg state no length a cut can
be measured against (FFmpeg's estimate from the bit rate shrinks with the file), so a clean cut there goes unseen.
"""

from __future__ import annotations

import dataclasses
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
# Demuxers whose duration comes from the file's header (FLAC STREAMINFO, MP4 mdhd, Matroska's Segment Duration),
# not from FFmpeg's estimate from the bit rate: only such a duration tells a cut file from a short one.
_HEADER_DURATION_FORMATS = frozenset({"flac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
# Decoded audio may fall short of the declared duration by encoder priming and padding (an AAC or MP3 frame or
# two, Opus pre-skip) and rounding; a cut worth telling anyone about is longer than this, or this share of it.
_CUT_TOLERANCE_SECONDS = 0.25
_CUT_TOLERANCE_SHARE = 0.01
# An MP3's Xing/Info (LAME) or VBRI tag sits in its first frame, at most 36 bytes in; this many bytes after any
# ID3v2 tag are searched for it (room for a little junk before the first frame).
_MP3_TAG_WINDOW = 256
# What to do about a cut-off upload, the end of every truncation note.
_RE_EXPORT = "re-export the recording or upload the whole file again"


class AudioDecodeError(InvalidArgument):
    """The upload is empty, not audio, corrupt, or in a format FFmpeg cannot decode."""


class NoAudioTrackError(AudioDecodeError):
    """The container was read but holds no audio stream (for example a video-only MP4)."""


class AudioTruncatedError(AudioDecodeError):
    """A WAV file holds less audio than its header declares (by more than one frame): a cut-off upload."""


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
    # None: decoded to the end the file declares. Otherwise why the audio may end early (a cut-off upload, or a
    # WAV that declares no length to check against), for the uploader; the audio before the cut is in samples.
    truncation: str | None = None

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
    before the cut, as players do, with ``truncation`` saying so; a WAV cut short raises AudioTruncatedError
    (see the module docstring).
    """
    if target_rate <= 0:
        raise ValueError(f"target_rate must be positive, got {target_rate}")
    if max_seconds is not None and max_seconds < 0:
        raise ValueError(f"max_seconds must not be negative, got {max_seconds}")
    if not data:
        raise AudioDecodeError("the file is empty")
    wav = _wav_layout(data)
    if wav is None:
        return _decode_with_ffmpeg(data, target_rate, max_seconds)
    truncation = _wav_truncation(wav, len(data))
    decoded = _decode_pcm_wav(data, wav, target_rate, max_seconds) or _decode_with_ffmpeg(
        data, target_rate, max_seconds
    )
    # The WAV header states the exact length: its check decides, not FFmpeg's general ones.
    return dataclasses.replace(decoded, truncation=truncation)


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
        bad_since_last_frame = 0
        last_error: BaseException | None = None
        demux_error: BaseException | None = None
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
                last_error = demux_error = exc
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
                bad_since_last_frame += 1
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
                bad_since_last_frame = 0
        acc.flush()
        declared_seconds = _declared_seconds(container, stream, data)

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
        truncation=_ffmpeg_truncation(
            acc.total / target_rate, declared_seconds, demux_error, bad_since_last_frame
        ),
    )


def _declared_seconds(container: Any, stream: AudioStream, data: bytes) -> float | None:
    """The audio's duration as the file's header states it; None where FFmpeg could only estimate it."""
    name = container.format.name
    if name not in _HEADER_DURATION_FORMATS and not (name == "mp3" and _mp3_declares_length(data)):
        return None
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if len(container.streams) == 1 and container.duration:
        # A container's duration covers every track (a video's may outlast its audio): used for audio alone.
        return float(container.duration / av.time_base)
    return None


def _mp3_declares_length(data: bytes) -> bool:
    """Whether the first MP3 frame carries a Xing/Info (LAME) tag with a frame count, or a VBRI tag."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        start = 10 + size + (10 if data[5] & 0x10 else 0)  # the header, the tag, and its footer if flagged
    head = data[start : start + _MP3_TAG_WINDOW]
    if b"VBRI" in head:
        return True
    for tag in (b"Xing", b"Info"):
        at = head.find(tag)
        if at >= 0 and len(head) >= at + 8 and int.from_bytes(head[at + 4 : at + 8], "big") & 1:
            return True  # flag 1: the frame count is present
    return False


def _ffmpeg_truncation(
    decoded_seconds: float,
    declared_seconds: float | None,
    demux_error: BaseException | None,
    bad_trailing_packets: int,
) -> str | None:
    if declared_seconds is not None:
        tolerance = max(_CUT_TOLERANCE_SECONDS, _CUT_TOLERANCE_SHARE * declared_seconds)
        if decoded_seconds < declared_seconds - tolerance:
            return (
                f"the file declares {declared_seconds:.2f} s of audio but its data ends after "
                f"{decoded_seconds:.2f} s: it was probably cut short, and the rest is missing; {_RE_EXPORT}"
            )
    if demux_error is not None:
        return (
            f"the file's data breaks off after {decoded_seconds:.2f} s of audio ({_reason(demux_error)}): "
            f"it may have been cut short; {_RE_EXPORT}"
        )
    if bad_trailing_packets:
        return (
            f"the audio after {decoded_seconds:.2f} s could not be decoded: the file may have been cut short; "
            f"{_RE_EXPORT}"
        )
    return None


_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


# Data sizes that declare no length. 0 and 0xFFFFFFFF: what FFmpeg (its wav muxer, on a pipe) and other streaming
# writers leave, and what FFmpeg's wav demuxer reads as "to the end of the file"; SoX writes 0x7FFFF000 rounded
# down to whole frames (its MS_UNSPEC) and ignores it when reading.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)
_SOX_UNKNOWN_DATA_SIZE = 0x7FFFF000


@dataclass(frozen=True)
class _WavLayout:
    """What a RIFF WAVE header says: the format chunk's fields and where the data chunk starts and how long."""

    tag: int  # WAVE_FORMAT_* (the sub-format's for WAVE_FORMAT_EXTENSIBLE)
    channels: int
    rate: int
    bytes_per_second: int
    block_align: int  # bytes per frame (one sample of every channel; a block of a compressed format)
    bits: int
    data_offset: int
    declared_size: int

    @property
    def declares_no_length(self) -> bool:
        sox = (_SOX_UNKNOWN_DATA_SIZE // self.block_align) * self.block_align
        return self.declared_size in _UNKNOWN_DATA_SIZES or self.declared_size == sox


def _wav_layout(data: bytes) -> _WavLayout | None:
    """The layout of a RIFF WAVE file, or None for anything else (or a header too damaged to read)."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position = 12
    fmt: tuple[int, int, int, int, int, int] | None = None
    while position + 8 <= len(data):
        chunk_id = data[position : position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = position + 8
        if chunk_id == b"fmt " and size >= 16 and body + 16 <= len(data):
            tag, channels, rate, bytes_per_second, block_align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                (tag,) = struct.unpack_from("<H", data, body + 24)  # the sub-format GUID starts with the tag
            fmt = (tag, channels, rate, bytes_per_second, block_align, bits)
        elif chunk_id == b"data":
            if fmt is None:
                return None
            tag, channels, rate, bytes_per_second, block_align, bits = fmt
            return _WavLayout(
                tag=tag,
                channels=channels,
                rate=rate,
                bytes_per_second=bytes_per_second,
                block_align=block_align or max(1, channels * bits // 8),
                bits=bits,
                data_offset=body,
                declared_size=size,
            )
        position = body + size + (size & 1)  # chunks are padded to an even size
    return None


def _wav_truncation(wav: _WavLayout, file_size: int) -> str | None:
    """None for a WAV holding its declared data (to within a frame); the note for one that declares no length.

    Raises AudioTruncatedError for a WAV holding less than it declares by more than a frame.
    """
    held = file_size - wav.data_offset
    if wav.declares_no_length:
        return (
            "the WAV header does not declare how long the audio is (tools streaming to a pipe write it so), so a "
            "cut-off file cannot be told from a whole one; it was read to the end of the file: check that the "
            "sample does not end too early, or export the recording to a file (which writes the length)"
        )
    if wav.declared_size - held <= wav.block_align:
        return None  # whole, or short of a part of its last frame (dropped, as players do)

    def seconds(size: int) -> str:
        return f" ({size / wav.bytes_per_second:.2f} s)" if wav.bytes_per_second > 0 else ""

    raise AudioTruncatedError(
        f"the WAV file is cut short: its header declares {wav.declared_size} bytes of audio"
        f"{seconds(wav.declared_size)} but the file holds {held}{seconds(held)}; {_RE_EXPORT}"
    )


def _decode_pcm_wav(
    data: bytes, wav: _WavLayout, target_rate: int, max_seconds: float | None
) -> DecodedAudio | None:
    """The common case, a plain 16-bit integer or 32-bit float PCM WAV, straight through numpy.

    FFmpeg hands PCM over in small frames, and the per-frame overhead made a 5-minute WAV cost 0.1 s before any
    real work. Returns None for anything else (other sample formats, odd layouts), which then goes through
    FFmpeg like every other format.
    """
    channels, rate = wav.channels, wav.rate
    if channels < 1 or not 1000 <= rate <= 384_000:
        return None
    dtype: np.dtype[Any]
    if (wav.tag, wav.bits) == (_WAVE_FORMAT_PCM, 16):
        dtype, scale = np.dtype("<i2"), np.float32(1.0 / 32768.0)
    elif (wav.tag, wav.bits) == (_WAVE_FORMAT_IEEE_FLOAT, 32):
        dtype, scale = np.dtype("<f4"), np.float32(1.0)
    else:
        return None
    # Chunks may follow the data; a WAV without a declared length, or a short partial frame, runs to the end.
    held = len(data) - wav.data_offset
    available = held if wav.declares_no_length else min(wav.declared_size, held)
    frame_bytes = dtype.itemsize * channels
    frames = available // frame_bytes
    if frames == 0:
        return None
    if max_seconds is not None and frames > max_seconds * rate:
        raise AudioTooLongError(max_seconds)
    pcm = np.frombuffer(data, dtype=dtype, count=frames * channels, offset=wav.data_offset)
    mono = (
        pcm.astype(np.float32) if channels == 1 else pcm.reshape(-1, channels).mean(axis=1, dtype=np.float32)
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
