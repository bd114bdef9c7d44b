"""Build real audio/video upload fixtures in memory with PyAV (no external tools, no files on disk).

Used by the test suites of several services::

    from voice_testing.media_files import encode_file, speechlike

    upload = encode_file(speechlike(3.0, 44100), 44100, "m4a", channels=2)

Notes on this PyAV/FFmpeg build:

* ``ogg_vorbis`` uses FFmpeg's native (experimental) Vorbis encoder, which only writes 2 channels: the file
  is always stereo whatever ``channels`` says (libvorbis is not in this build).
* Codecs with a fixed list of rates get the nearest supported rate at or above ``rate`` (the audio is
  resampled): Opus 8/12/16/24/48 kHz; MP3 and AAC their MPEG rates. WAV and FLAC keep ``rate``.
* Video kinds carry a small 64x64, 5 fps moving-gradient video track: ``mp4``/``mov`` H.264 (libx264) + AAC,
  ``webm`` VP8 (libvpx) + Opus, ``mkv`` MPEG-4 Part 2 + AAC, ``mp4_video_only`` H.264 with no audio stream.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.container
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from voice_common.audio.decoding import resample

KINDS = (
    "wav",
    "mp3",
    "m4a",
    "aac",
    "ogg_opus",
    "ogg_vorbis",
    "flac",
    "mp4",
    "mov",
    "webm",
    "mkv",
    "mp4_video_only",
)
VIDEO_KINDS = ("mp4", "mov", "webm", "mkv", "mp4_video_only")

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

_VIDEO_SIZE = 64
_VIDEO_FPS = 5
# Audio is fed to the muxer in pieces this long, interleaved with the video frames of the same time span.
_CHUNK_SECONDS = 0.2


@dataclass(frozen=True)
class _AudioSpec:
    codec: str
    sample_format: str  # the encoder's input format: packed ("s16", "flt") or planar ("fltp")
    rates: tuple[int, ...] | None = None  # None: any rate
    bit_rate: int = 0
    options: dict[str, str] = field(default_factory=dict)
    forced_channels: int | None = None


@dataclass(frozen=True)
class _VideoSpec:
    codec: str
    options: dict[str, str] = field(default_factory=dict)


_AAC = _AudioSpec("aac", "fltp", _AAC_RATES, bit_rate=96_000)
_OPUS = _AudioSpec("libopus", "flt", _OPUS_RATES, bit_rate=64_000)
_H264 = _VideoSpec("libx264", {"preset": "ultrafast", "tune": "zerolatency"})

_KIND_SPECS: dict[str, tuple[str, _AudioSpec | None, _VideoSpec | None]] = {
    "wav": ("wav", _AudioSpec("pcm_s16le", "s16"), None),
    "mp3": ("mp3", _AudioSpec("libmp3lame", "fltp", _MP3_RATES, bit_rate=128_000), None),
    "m4a": ("ipod", _AAC, None),
    "aac": ("adts", _AAC, None),
    "ogg_opus": ("ogg", _OPUS, None),
    "ogg_vorbis": (
        "ogg",
        _AudioSpec("vorbis", "fltp", options={"strict": "experimental"}, forced_channels=2),
        None,
    ),
    "flac": ("flac", _AudioSpec("flac", "s16"), None),
    "mp4": ("mp4", _AAC, _H264),
    "mov": ("mov", _AAC, _H264),
    "webm": ("webm", _OPUS, _VideoSpec("libvpx", {"deadline": "realtime", "cpu-used": "8"})),
    "mkv": ("matroska", _AAC, _VideoSpec("mpeg4")),
    "mp4_video_only": ("mp4", None, _H264),
}


def tone(seconds: float, rate: int = 24000, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine wave, float32."""
    t = np.arange(round(seconds * rate), dtype=np.float64) / rate
    return (amplitude * np.sin(2.0 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float, rate: int = 24000, seed: int = 0, amplitude: float = 0.3) -> np.ndarray:
    """A voice-like test signal: a harmonic tone with a wandering pitch, shaped into syllables and pauses.

    Syllables last 120-320 ms at ~4 per second, words of 2-5 syllables are separated by 150-400 ms pauses;
    the peak is ``amplitude``. It is clearly not silent for :func:`voice_common.audio.analyse` and has
    speech-like level statistics (about two thirds of its 20 ms frames are active). Deterministic for a
    given ``seed``.
    """
    n = round(seconds * rate)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / rate

    # Pitch: 110-200 Hz base with slow intonation and a little vibrato; integrate to phase.
    base_f0 = rng.uniform(110.0, 200.0)
    f0 = base_f0 * (
        1.0
        + 0.12 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
        + 0.02 * np.sin(2 * np.pi * 5.5 * t)
    )
    phase = 2.0 * np.pi * np.cumsum(f0) / rate
    voiced = np.zeros(n)
    for k in range(1, 13):
        voiced += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**1.2

    # Syllable envelope: raised-cosine bursts grouped into words, with silent gaps between words.
    envelope = np.zeros(n)
    pos = round(rng.uniform(0.02, 0.08) * rate)
    while pos < n:
        for _ in range(int(rng.integers(2, 6))):
            length = round(rng.uniform(0.12, 0.32) * rate)
            end = min(n, pos + length)
            if end <= pos:
                break
            window = np.sin(np.pi * np.arange(end - pos) / length) ** 2
            envelope[pos:end] = np.maximum(envelope[pos:end], window * rng.uniform(0.6, 1.0))
            pos += round(length * rng.uniform(0.7, 0.95))
        pos += round(rng.uniform(0.15, 0.4) * rate)

    # A little breath noise so pauses are not digital silence.
    signal = voiced * envelope + 0.002 * rng.standard_normal(n)
    peak = float(np.max(np.abs(signal)))
    return (signal * (amplitude / peak if peak > 0 else 0.0)).astype(np.float32)


def _codec_rate(rate: int, allowed: tuple[int, ...] | None) -> int:
    if allowed is None or rate in allowed:
        return rate
    higher = [r for r in allowed if r >= rate]
    return min(higher) if higher else max(allowed)


def _planar(samples: np.ndarray, channels: int) -> np.ndarray:
    """(channels, n) float32 from 1-D mono (duplicated to every channel) or an already (channels, n) array."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        return np.ascontiguousarray(np.repeat(x[None, :], channels, axis=0))
    if x.ndim == 2:
        return np.ascontiguousarray(x)
    raise ValueError(f"samples must be 1-D (mono) or 2-D (channels, n), got shape {x.shape}")


def _audio_frame(block: np.ndarray, sample_format: str, layout: str, rate: int, pts: int) -> av.AudioFrame:
    """An AudioFrame in the encoder's sample format from a (channels, n) float32 block."""
    if sample_format == "s16":
        pcm = np.clip(np.rint(np.clip(block, -1.0, 1.0) * 32768.0), -32768, 32767).astype(np.int16)
        array = np.ascontiguousarray(pcm.T).reshape(1, -1)  # packed: interleaved
    elif sample_format == "flt":
        array = np.ascontiguousarray(block.T).reshape(1, -1)
    else:  # planar float
        array = np.ascontiguousarray(block)
    frame = av.AudioFrame.from_ndarray(array, format=sample_format, layout=layout)
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame


def _video_frame(index: int) -> av.VideoFrame:
    size = _VIDEO_SIZE
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    shift = (index * 16) % 256
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[..., 0] = ((ramp[None, :] + shift) % 256).astype(np.uint8)
    image[..., 1] = ((ramp[:, None] + 2 * shift) % 256).astype(np.uint8)
    image[..., 2] = 128
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = index
    frame.time_base = Fraction(1, _VIDEO_FPS)
    return frame


def _add_audio_stream(
    container: av.container.OutputContainer, spec: _AudioSpec, rate: int, layout: str, channels: int
) -> AudioStream:
    stream = container.add_stream(
        spec.codec, rate=rate, options=dict(spec.options), layout=layout, format=spec.sample_format
    )
    assert isinstance(stream, AudioStream)
    if spec.bit_rate:
        stream.bit_rate = spec.bit_rate * channels
    stream.time_base = Fraction(1, rate)
    return stream


def _add_video_stream(container: av.container.OutputContainer, spec: _VideoSpec) -> VideoStream:
    stream = container.add_stream(spec.codec, rate=_VIDEO_FPS, options=dict(spec.options))
    assert isinstance(stream, VideoStream)
    stream.width = _VIDEO_SIZE
    stream.height = _VIDEO_SIZE
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, _VIDEO_FPS)
    return stream


def encode_file(samples: np.ndarray, rate: int, kind: str, *, channels: int = 1) -> bytes:
    """Encode float32 ``samples`` at ``rate`` Hz into a complete file of ``kind`` (see :data:`KINDS`).

    ``samples`` is 1-D mono (copied to each of ``channels`` channels) or a 2-D ``(channels, n)`` array (then
    ``channels`` is taken from its shape). Video kinds get a video track as long as the audio (at least one
    frame).
    """
    try:
        container_format, audio_spec, video_spec = _KIND_SPECS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}") from None
    planar = _planar(samples, channels)
    forced = audio_spec.forced_channels if audio_spec is not None else None
    if forced and planar.shape[0] != forced:
        planar = np.ascontiguousarray(np.repeat(planar.mean(axis=0)[None, :], forced, axis=0))
    n_channels = planar.shape[0]
    if n_channels not in (1, 2):
        raise ValueError(f"only mono or stereo fixtures are supported, got {n_channels} channels")
    layout = "mono" if n_channels == 1 else "stereo"

    codec_rate = rate
    if audio_spec is not None:
        codec_rate = _codec_rate(rate, audio_spec.rates)
        if codec_rate != rate:
            planar = np.stack([resample(ch, rate, codec_rate) for ch in planar])
    n_samples = planar.shape[1]

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        audio_stream = None
        video_stream = None
        if audio_spec is not None:
            audio_stream = _add_audio_stream(container, audio_spec, codec_rate, layout, n_channels)
        if video_spec is not None:
            video_stream = _add_video_stream(container, video_spec)

        n_video_frames = 0
        if video_stream is not None:
            n_video_frames = max(1, math.ceil(n_samples / codec_rate * _VIDEO_FPS))
        chunk = max(1, round(_CHUNK_SECONDS * codec_rate))
        next_video = 0
        position = 0
        # Interleave: each chunk of audio, then the video frames that start before the chunk ends.
        while position < n_samples or next_video < n_video_frames:
            end = min(n_samples, position + chunk)
            if audio_stream is not None and audio_spec is not None and end > position:
                block = planar[:, position:end]
                frame = _audio_frame(block, audio_spec.sample_format, layout, codec_rate, position)
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            step_end = end / codec_rate if end > position else math.inf
            while (
                video_stream is not None
                and next_video < n_video_frames
                and next_video / _VIDEO_FPS < step_end
            ):
                for packet in video_stream.encode(_video_frame(next_video)):
                    container.mux(packet)
                next_video += 1
            position = end
        if audio_stream is not None:
            for packet in audio_stream.encode(None):
                container.mux(packet)
        if video_stream is not None:
            for packet in video_stream.encode(None):
                container.mux(packet)
    return buffer.getvalue()


def _wav_data_chunk(wav: bytes) -> int:
    """Offset of the data chunk's header in ``wav``."""
    position = 12
    while position + 8 <= len(wav):
        size = int.from_bytes(wav[position + 4 : position + 8], "little")
        if wav[position : position + 4] == b"data":
            return position
        position += 8 + size + (size & 1)
    raise ValueError("no data chunk in the WAV")


def wav_data_size(wav: bytes) -> int:
    """The size ``wav``'s data chunk declares."""
    position = _wav_data_chunk(wav)
    return int.from_bytes(wav[position + 4 : position + 8], "little")


def with_wav_data_size(wav: bytes, declared: int) -> bytes:
    """``wav`` with its data chunk's size field set to ``declared`` (the bytes that follow are unchanged), as a
    cut-off upload (more than it holds) or a streaming writer (0xFFFFFFFF: length unknown) would leave it."""
    position = _wav_data_chunk(wav)
    return wav[: position + 4] + declared.to_bytes(4, "little") + wav[position + 8 :]
