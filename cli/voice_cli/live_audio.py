"""A recording sent as if it were being spoken now, for ``voice transcribe --live``.

The CLI carries no audio decoder (its install is the core one: no PyAV, no numpy), so the file goes out as its own
bytes in the encoding its name says (WAV, FLAC, Ogg Opus or MP3; the ASR service decodes the stream as it
arrives), paced so that each byte leaves when its share of the recording's duration has passed. The duration comes
from the file's header: WAV (the ``wave`` module) and FLAC (STREAMINFO) tell it exactly; for the others the pace
is that of a constant bit rate estimated from the first MP3 frame, or, for Ogg Opus, the last page's position.
"""

from __future__ import annotations

import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The encoding (a voice_client name) for each file ending the live API can decode as a stream.
LIVE_ENCODINGS = {".wav": "wav", ".flac": "flac", ".ogg": "ogg_opus", ".opus": "ogg_opus", ".mp3": "mp3"}
PIECE_SECONDS = 0.1  # as a microphone would deliver it
# MPEG-1 Layer III bit rates (kbit/s) by the header's index, and sample rates by version and index.
_MP3_KBPS = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)}
_MP3_KBPS_LSF = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


class NotLiveAudio(ValueError):
    """A file the live API cannot take, or whose duration its header does not tell."""


@dataclass(frozen=True)
class LiveFile:
    path: Path
    encoding: str
    duration_seconds: float


def live_file(path: Path) -> LiveFile:
    encoding = LIVE_ENCODINGS.get(path.suffix.lower())
    if encoding is None:
        raise NotLiveAudio(
            f"{path.name}: --live takes WAV, FLAC, Ogg Opus or MP3 files (by their ending); "
            "transcribe it without --live"
        )
    data = path.read_bytes()
    seconds = {
        "wav": _wav_seconds,
        "flac": _flac_seconds,
        "ogg_opus": _ogg_opus_seconds,
        "mp3": _mp3_seconds,
    }[encoding](path, data)
    if not seconds or seconds <= 0:
        raise NotLiveAudio(
            f"{path.name}: its header does not tell how long it is; transcribe it without --live"
        )
    return LiveFile(path, encoding, seconds)


def paced_pieces(audio: LiveFile, speed: float = 1.0) -> Iterator[bytes]:
    """The file's bytes in pieces of about PIECE_SECONDS each, each yielded no earlier than its place in the
    recording (``speed`` > 1 sends faster than real time)."""
    data = audio.path.read_bytes()
    per_second = len(data) / audio.duration_seconds
    piece = max(512, round(per_second * PIECE_SECONDS))
    started = time.monotonic()
    for offset in range(0, len(data), piece):
        due = started + offset / per_second / speed
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        yield data[offset : offset + piece]


def _wav_seconds(path: Path, data: bytes) -> float | None:
    try:
        with wave.open(str(path)) as recording:
            return recording.getnframes() / recording.getframerate()
    except (wave.Error, EOFError):
        return None


def _flac_seconds(path: Path, data: bytes) -> float | None:
    # "fLaC", then the STREAMINFO block (4-byte header): rate (20 bits) and total samples (36 bits) at bytes 10-17.
    if data[:4] != b"fLaC" or len(data) < 26:
        return None
    packed = int.from_bytes(data[18:26], "big")
    rate = packed >> 44
    total = packed & ((1 << 36) - 1)
    return total / rate if rate and total else None


def _ogg_opus_seconds(path: Path, data: bytes) -> float | None:
    # The last page's granule position counts 48 kHz samples, pre-skip included (OpusHead bytes 10-11).
    last = data.rfind(b"OggS")
    head = data.find(b"OpusHead")
    if last < 0 or head < 0 or len(data) < last + 14:
        return None
    granule = struct.unpack_from("<q", data, last + 6)[0]
    pre_skip = struct.unpack_from("<H", data, head + 10)[0]
    return (granule - pre_skip) / 48000 if granule > pre_skip else None


def _mp3_seconds(path: Path, data: bytes) -> float | None:
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # skip an ID3v2 tag (its size is four 7-bit bytes)
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        start = 10 + size
    for offset in range(start, min(len(data) - 4, start + 64 * 1024)):
        if data[offset] == 0xFF and data[offset + 1] & 0xE6 == 0xE2:  # frame sync, Layer III
            version_bits = (data[offset + 1] >> 3) & 0x3
            bitrate_index = data[offset + 2] >> 4
            if bitrate_index in (0, 15) or version_bits == 1:
                continue
            kbps = _MP3_KBPS[1][bitrate_index] if version_bits == 3 else _MP3_KBPS_LSF[bitrate_index]
            return (len(data) - offset) * 8 / (kbps * 1000)
    return None
