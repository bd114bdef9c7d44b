"""voice_common.audio with real codecs (PyAV/FFmpeg), no mocks.

Length tolerances used below, in seconds of decoded audio:

* WAV, FLAC, LINEAR16 (and anything PCM): exact (to one sample after resampling).
* Ogg Opus, MP3 written as whole files: FFmpeg trims the encoder priming from the header (Opus pre-skip,
  the LAME tag), so the length is exact; we allow one codec frame (Opus 20 ms, MP3 1152/576 samples).
* Streaming MP3 has no LAME tag (it would need a seek back), so the decoder keeps the encoder delay and the
  last frame's padding: up to three MP3 frames longer. Streaming Opus is exact (pre-skip is in the header).
* AAC in MP4/M4A/MOV/MKV: up to one AAC frame (1024 samples) of padding remains at the end; raw ADTS AAC
  has no edit list, so the 1024-sample priming stays as well (about 2 frames in all).
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice_common.audio import (
    AudioDecodeError,
    AudioEncoding,
    AudioTooLongError,
    AudioTruncatedError,
    AudioWarningCode,
    DecodedAudio,
    NoAudioTrackError,
    ReferenceLimits,
    StreamingEncoder,
    analyse,
    decode_audio,
    decode_linear16,
    decode_reference_audio,
    encode_audio,
    mime_type_for,
    resample,
)
from voice_common.audio.encoding import to_s16
from voice_common.errors import InvalidArgument
from voice_testing.media_files import (
    KINDS,
    encode_file,
    speechlike,
    tone,
    wav_data_size,
    with_wav_data_size,
)

RATE = 24000
MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"

# kind -> (source_container, source_codec, length tolerance in seconds)
EXPECTED = {
    "wav": ("wav", "pcm_s16le", 0.0),
    "mp3": ("mp3", "mp3float", 1152 / RATE),
    "m4a": (MP4_FAMILY, "aac", 1024 / RATE),
    "aac": ("aac", "aac", 3 * 1024 / RATE),
    "ogg_opus": ("ogg", "opus", 0.02),
    "ogg_vorbis": ("ogg", "vorbis", 0.01),
    "flac": ("flac", "flac", 0.0),
    "mp4": (MP4_FAMILY, "aac", 1024 / RATE),
    "mov": (MP4_FAMILY, "aac", 1024 / RATE),
    "webm": ("matroska,webm", "opus", 0.02),
    "mkv": ("matroska,webm", "aac", 1024 / RATE),
}
AUDIO_KINDS = [k for k in KINDS if k != "mp4_video_only"]


def rms_db(x: np.ndarray) -> float:
    return 10.0 * float(np.log10(np.mean(np.square(x, dtype=np.float64))))


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return speechlike(1.5, RATE, seed=3)


@pytest.fixture(scope="module")
def files(voice: np.ndarray) -> dict[str, bytes]:
    return {kind: encode_file(voice, RATE, kind) for kind in KINDS}


# --- decode_audio: every kind -------------------------------------------------------------------------------


def test_media_files_knows_every_kind() -> None:
    assert set(AUDIO_KINDS) == set(EXPECTED)


@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_round_trip_every_kind(kind: str, voice: np.ndarray, files: dict[str, bytes]) -> None:
    container, codec, tolerance = EXPECTED[kind]
    decoded = decode_audio(files[kind], target_rate=RATE)

    assert isinstance(decoded, DecodedAudio)
    assert decoded.sample_rate == RATE
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert float(np.max(np.abs(decoded.samples))) <= 1.0
    assert decoded.source_container == container
    assert decoded.source_codec == codec
    expected_channels = 2 if kind == "ogg_vorbis" else 1  # FFmpeg's Vorbis encoder only writes stereo
    assert decoded.source_channels == expected_channels
    assert decoded.duration_seconds >= 1.5 - 1 / RATE
    assert decoded.duration_seconds <= 1.5 + tolerance + 1 / RATE
    # Energy preserved (lossy codecs and the downmix of identical channels change it by well under 1.5 dB).
    assert abs(rms_db(decoded.samples) - rms_db(voice)) < 1.5
    assert not analyse(decoded.samples, RATE).is_silent
    assert decoded.truncation is None, "a whole file is not taken for a cut one"


def test_wav_and_flac_are_sample_exact(voice: np.ndarray, files: dict[str, bytes]) -> None:
    expected = to_s16(voice).astype(np.float32) / 32768.0
    for kind in ("wav", "flac"):
        np.testing.assert_array_equal(decode_audio(files[kind], target_rate=RATE).samples, expected)


def test_decode_resamples_to_target_rate(files: dict[str, bytes]) -> None:
    for target in (16000, 48000):
        decoded = decode_audio(files["m4a"], target_rate=target)
        assert decoded.sample_rate == target
        assert decoded.source_sample_rate == RATE
        assert abs(decoded.duration_seconds - 1.5) <= 1024 / RATE + 1 / target


def test_stereo_44k_is_downmixed_to_the_channel_average() -> None:
    rate = 44100
    left = tone(1.0, rate, freq=220.0, amplitude=0.4)
    right = tone(1.0, rate, freq=330.0, amplitude=0.2)
    stereo = np.stack([left, right])

    decoded = decode_audio(encode_file(stereo, rate, "wav"), target_rate=RATE)
    assert (decoded.source_sample_rate, decoded.source_channels) == (44100, 2)
    expected = resample((to_s16(left) / 32768.0 + to_s16(right) / 32768.0) / 2, rate, RATE)
    assert len(decoded.samples) == len(expected) == RATE
    assert float(np.max(np.abs(decoded.samples - expected))) < 1e-3

    # Opposite channels cancel: the average, not FFmpeg's default +3 dB centre mix.
    cancelled = decode_audio(encode_file(np.stack([left, -left]), rate, "wav"), target_rate=RATE)
    assert float(np.max(np.abs(cancelled.samples))) < 1e-3

    # Full-scale identical channels stay within [-1, 1].
    loud = tone(0.5, rate, amplitude=1.0)
    loud_decoded = decode_audio(encode_file(loud, rate, "flac", channels=2), target_rate=RATE)
    assert float(np.max(np.abs(loud_decoded.samples))) <= 1.0


def test_stereo_44k_m4a(voice: np.ndarray) -> None:
    voice44 = resample(voice, RATE, 44100)
    decoded = decode_audio(encode_file(voice44, 44100, "m4a", channels=2), target_rate=RATE)
    assert (decoded.source_sample_rate, decoded.source_channels) == (44100, 2)
    assert abs(decoded.duration_seconds - 1.5) <= 2048 / 44100
    assert abs(rms_db(decoded.samples) - rms_db(voice)) < 1.5


@pytest.mark.parametrize("kind", ["mp4", "mov", "webm", "mkv"])
def test_video_containers_give_their_audio_track(
    kind: str, voice: np.ndarray, files: dict[str, bytes]
) -> None:
    decoded = decode_audio(files[kind], target_rate=RATE)
    n = min(len(voice), len(decoded.samples))
    # The decoded audio is the voice (correlated), not video data decoded as audio.
    corr = np.corrcoef(voice[:n], decoded.samples[:n])[0, 1]
    assert corr > 0.9


def test_video_only_file_has_no_audio_track(files: dict[str, bytes]) -> None:
    with pytest.raises(NoAudioTrackError) as info:
        decode_audio(files["mp4_video_only"])
    error = info.value
    assert isinstance(error, AudioDecodeError)
    assert isinstance(error, InvalidArgument)
    assert "no audio track" in error.message
    assert "video h264" in error.message


# --- decode_audio: bad input --------------------------------------------------------------------------------


def test_empty_file() -> None:
    with pytest.raises(AudioDecodeError, match="the file is empty"):
        decode_audio(b"")


@pytest.mark.parametrize("seed", range(8))
def test_garbage_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    magic = [b"", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"ID3\x04\x00", b"OggS\x00\x02", b"fLaC", b"\x1aE\xdf\xa3"]
    data = magic[seed % len(magic)] + rng.integers(0, 256, 2000 + 1000 * seed, dtype=np.uint8).tobytes()
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(data)
    assert isinstance(info.value, InvalidArgument)


def test_text_file_message_says_what_to_upload() -> None:
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(b"this is a text file, not a recording\n" * 20)
    message = info.value.message
    assert message.startswith("the file could not be decoded as audio (tried FFmpeg's demuxers): ")
    assert "Upload WAV, MP3, M4A/AAC, OGG, FLAC, or an MP4/MOV/WebM/MKV video with an audio track" in message


@pytest.mark.parametrize(("kind", "keep"), [("m4a", 0.5), ("mp4", 0.8), ("ogg_opus", 0.3), ("flac", 0.002)])
def test_truncated_files_that_cannot_be_decoded(kind: str, keep: float, files: dict[str, bytes]) -> None:
    # M4A/MP4 keep their index (moov) at the end; the Ogg file's first audio page is cut; FLAC loses its
    # header.
    data = files[kind]
    with pytest.raises(AudioDecodeError):
        decode_audio(data[: int(len(data) * keep)])


def test_wav_header_without_samples(files: dict[str, bytes]) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(files["wav"][:44])


# --- cut-off files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp3", "flac", "m4a_faststart", "webm_audio_only", "aac"])
def test_file_cut_in_the_middle_gives_the_audio_before_the_cut_and_says_so(kind: str, tmp_path: Path) -> None:
    # As media players do, the audio up to the cut; and the note a sample's TRUNCATED warning carries. MP3, FLAC,
    # MP4 and Matroska declare their length in a header; raw AAC leaves a last frame that does not decode.
    if kind == "m4a_faststart":
        data = _remux_audio(
            encode_file(speechlike(4.0, RATE, seed=8), RATE, "m4a"), tmp_path / "a.m4a", "mp4"
        )
        assert data.find(b"moov") < data.find(b"mdat"), "the index first, so a cut copy still opens"
    elif kind == "webm_audio_only":
        data = _remux_audio(
            encode_file(speechlike(4.0, RATE, seed=8), RATE, "webm"), tmp_path / "a.webm", "webm"
        )
    else:
        data = encode_file(speechlike(4.0, RATE, seed=8), RATE, kind)
    decoded = decode_audio(data[: len(data) // 2])
    assert 1.0 < decoded.duration_seconds < 3.0
    assert decoded.truncation is not None
    assert "cut short" in decoded.truncation and "upload the whole file again" in decoded.truncation
    if kind != "aac":
        assert "declares 4.0" in decoded.truncation, decoded.truncation
    assert decode_audio(data).truncation is None


def _remux_audio(data: bytes, path: Path, container_format: str) -> bytes:
    """The audio track of ``data`` alone in a ``container_format`` file; an MP4 gets its index (moov) before the
    audio, as phones and ``-movflags faststart`` write it."""
    import av

    options = {"movflags": "faststart"} if container_format == "mp4" else {}
    with (
        av.open(io.BytesIO(data), "r") as source,
        av.open(str(path), "w", format=container_format, options=options) as target,
    ):
        stream = target.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return path.read_bytes()


def test_mp3_without_a_length_tag_is_not_judged_by_an_estimate() -> None:
    # No Xing/Info tag (a streamed MP3): FFmpeg's duration is an estimate from the bit rate, not a declaration.
    whole = encode_audio(speechlike(4.0, RATE, seed=8), RATE, AudioEncoding.MP3)
    encoder = StreamingEncoder(AudioEncoding.MP3, RATE, RATE)
    streamed = encoder.encode(speechlike(4.0, RATE, seed=8)) + encoder.flush()
    encoder.close()
    from voice_common.audio.decoding import _mp3_declares_length

    assert _mp3_declares_length(whole) and not _mp3_declares_length(streamed)
    id3 = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0]) + bytes(128)  # a 128-byte ID3v2 tag before the first frame
    assert _mp3_declares_length(id3 + whole)
    assert decode_audio(streamed).truncation is None


def test_wav_cut_short_is_refused_with_the_sizes(files: dict[str, bytes]) -> None:
    data = files["wav"]  # 1.5 s, mono 16-bit at 24 kHz: 72000 bytes of audio
    with pytest.raises(AudioTruncatedError) as info:
        decode_audio(data[: len(data) // 2])
    assert isinstance(info.value, AudioDecodeError)
    message = info.value.message
    assert message.startswith("the WAV file is cut short: its header declares 72000 bytes of audio (1.50 s)")
    assert "re-export the recording or upload the whole file again" in message
    with pytest.raises(AudioTruncatedError, match="declares 720000 bytes"):
        decode_audio(with_wav_data_size(data, 720000))


def test_wav_short_of_its_declared_size_by_at_most_a_frame_is_whole() -> None:
    whole = encode_file(speechlike(1.5, RATE, seed=3), RATE, "wav", channels=2)  # 4-byte frames
    for missing in (1, 3, 4):
        decoded = decode_audio(with_wav_data_size(whole, wav_data_size(whole) + missing))
        assert decoded.duration_seconds == pytest.approx(1.5) and decoded.truncation is None
    with pytest.raises(AudioTruncatedError):
        decode_audio(with_wav_data_size(whole, wav_data_size(whole) + 5))


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0, (0x7FFFF000 // 2) * 2])
def test_wav_that_declares_no_length_is_read_to_the_end_with_a_note(
    declared: int, files: dict[str, bytes]
) -> None:
    # ffmpeg streaming to a pipe writes 0xFFFFFFFF, some writers 0, SoX 0x7FFFF000 rounded to whole frames.
    decoded = decode_audio(with_wav_data_size(files["wav"], declared))
    assert decoded.duration_seconds == pytest.approx(1.5)
    assert decoded.truncation is not None and "does not declare" in decoded.truncation
    pcm24 = _wav(speechlike(1.0), 24000, channels=1)  # the FFmpeg path reads such a WAV to the end as well
    pcm24 = with_wav_data_size(pcm24, declared)
    decoded = decode_audio(pcm24)
    assert decoded.duration_seconds == pytest.approx(1.0) and decoded.truncation is not None


def test_corrupted_bytes_never_crash(files: dict[str, bytes]) -> None:
    rng = np.random.default_rng(7)
    for kind in AUDIO_KINDS:
        data = bytearray(files[kind])
        for index in rng.integers(0, len(data), 40):
            data[index] = int(rng.integers(0, 256))
        try:
            decoded = decode_audio(bytes(data))
        except AudioDecodeError:
            continue
        assert decoded.samples.dtype == np.float32
        assert float(np.max(np.abs(decoded.samples), initial=0.0)) <= 1.0


def test_playlist_demuxers_cannot_read_local_files(
    tmp_path: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg's concat demuxer would open "secret.wav" relative to the working directory.
    (tmp_path / "secret.wav").write_bytes(files["wav"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AudioDecodeError):
        decode_audio(b"ffconcat version 1.0\nfile secret.wav\n")


# --- limits -------------------------------------------------------------------------------------------------


def test_max_seconds(files: dict[str, bytes]) -> None:
    assert decode_audio(files["wav"], max_seconds=1.5).duration_seconds == pytest.approx(1.5)
    for kind in ("wav", "mp3", "flac", "mp4"):
        with pytest.raises(AudioTooLongError) as info:
            decode_audio(files[kind], max_seconds=0.5)
        assert isinstance(info.value, InvalidArgument)
        assert "0.5 seconds" in info.value.message


def test_max_seconds_stops_early_on_a_long_file() -> None:
    # 10 minutes of near-silence in FLAC is tiny; the limit stops decoding long before the end.
    long_file = encode_file(np.zeros(10 * 60 * 8000, dtype=np.float32), 8000, "flac")
    assert len(long_file) < 2_000_000
    started = time.perf_counter()
    with pytest.raises(AudioTooLongError):
        decode_audio(long_file, max_seconds=2.0)
    assert time.perf_counter() - started < 0.5


def test_five_minute_48k_wav_decodes_fast() -> None:
    rate = 48000
    data = encode_audio(tone(300.0, rate), rate, AudioEncoding.WAV)
    assert len(data) == 300 * rate * 2 + 44
    started = time.perf_counter()
    decoded = decode_audio(data, target_rate=RATE)
    elapsed = time.perf_counter() - started
    assert len(decoded.samples) == 300 * RATE
    # Measured ~0.15 s on a 2-core box; the bound only catches a per-sample Python loop sneaking in.
    assert elapsed < 2.0, f"5-minute WAV took {elapsed:.2f} s"


# --- decode_linear16 ----------------------------------------------------------------------------------------


def test_decode_linear16(voice: np.ndarray) -> None:
    pcm = to_s16(voice).tobytes()
    same = decode_linear16(pcm, RATE, target_rate=RATE)
    np.testing.assert_array_equal(same.samples, to_s16(voice) / np.float32(32768.0))
    assert (same.source_codec, same.source_sample_rate, same.source_channels) == ("pcm_s16le", RATE, 1)

    up = decode_linear16(to_s16(resample(voice, RATE, 16000)).tobytes(), 16000, target_rate=RATE)
    assert up.sample_rate == RATE
    assert abs(len(up.samples) - len(voice)) <= 1


def test_decode_linear16_rejects_bad_input() -> None:
    with pytest.raises(AudioDecodeError, match="even number of bytes"):
        decode_linear16(b"\x00\x01\x02", 16000)
    with pytest.raises(AudioDecodeError, match="empty"):
        decode_linear16(b"", 16000)
    for rate in (7999, 48001, 0):
        with pytest.raises(InvalidArgument) as info:
            decode_linear16(b"\x00\x00", rate)
        assert info.value.field == "format.sample_rate_hertz"
        assert not isinstance(info.value, AudioDecodeError)
    with pytest.raises(AudioTooLongError):
        decode_linear16(b"\x00\x00" * 16001, 16000, max_seconds=1.0)


def test_resample() -> None:
    x = tone(1.0, 48000)
    np.testing.assert_array_equal(resample(x, 48000, 48000), x)
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32
    assert len(y) == 16000
    # A 220 Hz tone survives resampling at the same level.
    assert abs(rms_db(y[1000:-1000]) - rms_db(x)) < 0.1


# --- analyse ------------------------------------------------------------------------------------------------


def test_analyse_silence() -> None:
    result = analyse(np.zeros(RATE, dtype=np.float32), RATE)
    assert result.is_silent
    assert result.peak_dbfs == result.rms_dbfs == result.active_rms_dbfs == -120.0
    assert result.active_fraction == 0.0
    assert result.warnings == ()
    assert result.duration_seconds == 1.0

    hiss = (np.random.default_rng(0).standard_normal(RATE) * 10 ** (-70 / 20)).astype(np.float32)
    assert analyse(hiss, RATE).is_silent

    empty = analyse(np.zeros(0, dtype=np.float32), RATE)
    assert empty.is_silent
    assert empty.duration_seconds == 0.0


def test_analyse_tone() -> None:
    result = analyse(tone(1.0, RATE, amplitude=0.5), RATE)
    assert not result.is_silent
    assert result.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert result.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert result.active_rms_dbfs == pytest.approx(result.rms_dbfs, abs=0.01)
    assert result.active_fraction == 1.0
    assert result.clipped_fraction == 0.0
    assert result.warnings == ()


def test_analyse_speechlike_is_active_but_has_pauses() -> None:
    result = analyse(speechlike(5.0, RATE), RATE)
    assert not result.is_silent
    assert 0.4 < result.active_fraction < 0.95
    assert result.active_rms_dbfs > result.rms_dbfs
    assert result.warnings == ()


def test_analyse_clipping_warning() -> None:
    clipped = np.clip(tone(1.0, RATE, amplitude=1.5), -1.0, 1.0)
    result = analyse(clipped, RATE)
    assert result.clipped_fraction > 0.1
    codes = [w.code for w in result.warnings]
    assert codes == [AudioWarningCode.CLIPPING]
    assert "% of samples are clipped" in result.warnings[0].message
    assert "lower input gain" in result.warnings[0].message


def test_analyse_low_level_warning() -> None:
    result = analyse(speechlike(3.0, RATE, amplitude=0.03), RATE)
    assert not result.is_silent
    assert result.active_rms_dbfs < -35.0
    assert [w.code for w in result.warnings] == [AudioWarningCode.LOW_LEVEL]
    assert "closer to the microphone" in result.warnings[0].message


def test_analyse_short_clip() -> None:
    result = analyse(tone(0.005, RATE), RATE)  # shorter than one 20 ms frame
    assert result.active_fraction == 1.0
    assert not result.is_silent


# --- the reference rules (profile samples and inline TTS references) ----------------------------------------


def _wav_of(samples: np.ndarray) -> bytes:
    return encode_file(samples, RATE, "wav")


REFUSED_REFERENCES = [
    (
        "1 s of speech",
        lambda: _wav_of(speechlike(1.0, RATE, seed=2)),
        "the sample is 1.00 s long; it must be at least 2 s of speech (5-15 s clones best)",
    ),
    (
        "5 s of digital silence",
        lambda: _wav_of(np.zeros(5 * RATE, np.float32)),
        "the sample is silent (no speech above the noise floor); check the microphone and upload a recording "
        "of the voice",
    ),
    (
        "11 s (limit 10)",
        lambda: _wav_of(speechlike(11.0, RATE, seed=2)),
        "the audio is longer than the limit of 10 seconds; trim it to at most 10 seconds and upload it again",
    ),
    ("not audio", lambda: b"not audio" * 100, "the file could not be decoded as audio"),
    (
        "a WAV holding half its data",
        lambda: _wav_of(speechlike(3.0, RATE, seed=2))[:-72000],
        "the WAV file is cut short: its header declares 144000 bytes of audio (3.00 s) but the file holds 72000",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "message"), REFUSED_REFERENCES, ids=[c[0] for c in REFUSED_REFERENCES]
)
def test_reference_rules_refuse_naming_the_callers_field(case: str, make: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_reference_audio(make(), ReferenceLimits(2.0, 10.0), sample_rate=RATE, field="voice.audio")
    assert info.value.message.startswith(message), info.value.message
    assert [(v.field, v.description) for v in info.value.violations] == [("voice.audio", info.value.message)]


def test_reference_warnings_are_the_levels_then_a_cut() -> None:
    quiet_and_streamed = with_wav_data_size(
        _wav_of(speechlike(3.0, RATE, seed=2, amplitude=0.02)), 0xFFFFFFFF
    )
    checked = decode_reference_audio(quiet_and_streamed, ReferenceLimits(), sample_rate=16000, field="chunk")
    assert checked.decoded.sample_rate == 16000 and checked.decoded.duration_seconds == pytest.approx(3.0)
    assert [w.code for w in checked.warnings] == [AudioWarningCode.LOW_LEVEL, AudioWarningCode.TRUNCATED]
    assert checked.warnings[1].message == checked.decoded.truncation
    assert checked.analysis.warnings == checked.warnings[:1]
    clean = decode_reference_audio(
        _wav_of(speechlike(3.0, RATE, seed=2)), ReferenceLimits(), sample_rate=RATE, field="chunk"
    )
    assert clean.warnings == ()


# --- encode_audio -------------------------------------------------------------------------------------------


def frame_tolerance(encoding: AudioEncoding, rate: int) -> int:
    """Samples (at ``rate``) a decoded whole file may differ from the input length (see the docstring)."""
    if encoding is AudioEncoding.OGG_OPUS:
        return rate // 50  # one 20 ms Opus frame
    if encoding is AudioEncoding.MP3:
        return 1152 if rate >= 32000 else 576
    if encoding is AudioEncoding.AAC:
        return 2048  # the encoder's 1024 samples of priming, which ADTS cannot declare, and the last frame's padding
    return 1  # PCM/FLAC: exact (one sample for resampler rounding)


def decode_encoded(data: bytes, encoding: AudioEncoding, rate: int) -> DecodedAudio:
    if encoding is AudioEncoding.LINEAR16:
        return decode_linear16(data, rate, target_rate=rate)
    return decode_audio(data, target_rate=rate)


@pytest.mark.parametrize("encoding", list(AudioEncoding))
@pytest.mark.parametrize("target_rate", [None, 16000, 48000])
def test_encode_audio_round_trip(encoding: AudioEncoding, target_rate: int | None, voice: np.ndarray) -> None:
    data = encode_audio(voice, RATE, encoding, target_rate=target_rate)
    rate = target_rate or RATE
    decoded = decode_encoded(data, encoding, rate)
    expected_len = round(len(voice) * rate / RATE)
    assert abs(len(decoded.samples) - expected_len) <= frame_tolerance(encoding, rate)
    assert abs(rms_db(decoded.samples) - rms_db(voice)) < 1.0
    if encoding is AudioEncoding.WAV:
        assert data[:4] == b"RIFF"
        assert struct.unpack("<I", data[40:44])[0] == len(data) - 44


def test_pcm_encodings_are_exact(voice: np.ndarray) -> None:
    expected = to_s16(voice).astype(np.float32) / 32768.0
    for encoding in (AudioEncoding.LINEAR16, AudioEncoding.WAV, AudioEncoding.FLAC):
        decoded = decode_encoded(encode_audio(voice, RATE, encoding), encoding, RATE)
        np.testing.assert_array_equal(decoded.samples, expected)


def test_to_s16_clips_then_rounds() -> None:
    x = np.array([-2.0, -1.0, -0.5, 0.0, 1 / 65536 + 1e-9, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    assert to_s16(x).tolist() == [-32768, -32768, -16384, 0, 1, 16384, 32767, 32767, 0]
    assert encode_audio(x[:2], RATE, AudioEncoding.LINEAR16) == struct.pack("<hh", -32768, -32768)


def test_encode_audio_rejects_bad_rates(voice: np.ndarray) -> None:
    for encoding in AudioEncoding:
        for rate in (7999, 48001, 96000):
            with pytest.raises(InvalidArgument) as info:
                encode_audio(voice, RATE, encoding, target_rate=rate)
            assert info.value.field == "format.sample_rate_hertz"
    with pytest.raises(InvalidArgument) as info:
        encode_audio(voice, RATE, AudioEncoding.OGG_OPUS, target_rate=44100)
    assert info.value.field == "format.sample_rate_hertz"
    assert "8000, 12000, 16000, 24000, 48000" in info.value.message
    with pytest.raises(InvalidArgument) as info:
        encode_audio(voice, RATE, AudioEncoding.MP3, target_rate=44000)
    assert "8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000" in info.value.message
    # Source rate outside the range with no target: the output rate is the source rate, so it is rejected too.
    with pytest.raises(InvalidArgument):
        encode_audio(voice, 96000, AudioEncoding.WAV)
    # Odd but valid rates work for PCM/FLAC.
    flac_44k = encode_audio(voice, RATE, AudioEncoding.FLAC, target_rate=44000)
    assert decode_audio(flac_44k).source_sample_rate == 44000


def test_mime_types() -> None:
    assert {e: mime_type_for(e) for e in AudioEncoding} == {
        AudioEncoding.LINEAR16: "audio/L16",
        AudioEncoding.WAV: "audio/wav",
        AudioEncoding.FLAC: "audio/flac",
        AudioEncoding.OGG_OPUS: "audio/ogg",
        AudioEncoding.MP3: "audio/mpeg",
        AudioEncoding.AAC: "audio/aac",
    }


# --- StreamingEncoder ---------------------------------------------------------------------------------------


def stream_encode(encoder: StreamingEncoder, samples: np.ndarray, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    pieces: list[bytes] = []
    position = 0
    while position < len(samples):
        size = int(rng.integers(1, 4000))
        pieces.append(encoder.encode(samples[position : position + size]))
        position += size
    pieces.append(encoder.flush())
    return pieces


def stream_tolerance(encoding: AudioEncoding, rate: int) -> tuple[int, int]:
    """(fewer, more) samples a decoded stream may have than the input."""
    if encoding is AudioEncoding.MP3:
        frame = 1152 if rate >= 32000 else 576
        return frame, 3 * frame
    tolerance = frame_tolerance(encoding, rate)
    return tolerance, tolerance


@pytest.mark.parametrize("encoding", list(AudioEncoding))
@pytest.mark.parametrize("output_rate", [None, 16000])
def test_streaming_encoder(encoding: AudioEncoding, output_rate: int | None, voice: np.ndarray) -> None:
    encoder = StreamingEncoder(encoding, RATE, output_rate)
    pieces = stream_encode(encoder, voice)
    rate = output_rate or RATE
    decoded = decode_encoded(b"".join(pieces), encoding, rate)
    expected_len = round(len(voice) * rate / RATE)
    fewer, more = stream_tolerance(encoding, rate)
    assert expected_len - fewer <= len(decoded.samples) <= expected_len + more
    assert abs(rms_db(decoded.samples) - rms_db(voice)) < 1.0
    # Bytes flow out before the end of the stream.
    assert sum(len(p) for p in pieces[:-1]) > 0
    assert encoder.flush() == b""
    with pytest.raises(RuntimeError):
        encoder.encode(voice[:10])


def test_streaming_pcm_matches_whole_file_encoding(voice: np.ndarray) -> None:
    for encoding in (AudioEncoding.LINEAR16, AudioEncoding.WAV):
        for rate in (None, 16000):
            streamed = b"".join(stream_encode(StreamingEncoder(encoding, RATE, rate), voice, seed=5))
            whole = encode_audio(voice, RATE, encoding, target_rate=rate)
            if encoding is AudioEncoding.WAV:
                assert streamed[:44] == whole[:4] + b"\xff\xff\xff\xff" + whole[8:40] + b"\xff\xff\xff\xff"
                streamed, whole = streamed[44:], whole[44:]
            assert streamed == whole


def test_streaming_wav_header_only() -> None:
    encoder = StreamingEncoder(AudioEncoding.WAV, RATE)
    header = encoder.encode(np.zeros(0, dtype=np.float32)) + encoder.flush()
    assert len(header) == 44
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF


def test_streaming_encoder_close_abandons_the_stream(voice: np.ndarray) -> None:
    for encoding in AudioEncoding:
        encoder = StreamingEncoder(encoding, RATE)
        encoder.encode(voice[:4800])
        encoder.close()
        encoder.close()
        assert encoder.flush() == b""
        with pytest.raises(RuntimeError):
            encoder.encode(voice[:10])


def test_streaming_encoder_rejects_bad_rates() -> None:
    with pytest.raises(InvalidArgument):
        StreamingEncoder(AudioEncoding.OGG_OPUS, RATE, 22050)
    with pytest.raises(InvalidArgument):
        StreamingEncoder(AudioEncoding.WAV, 96000)


# -- the numpy fast path for plain PCM WAV -------------------------------------------------------------------


def _wav(
    samples: np.ndarray, rate: int, *, channels: int, float32: bool = False, extensible: bool = False
) -> bytes:
    """A WAV written by hand, so the header variants are exactly what the test says."""
    import struct

    interleaved = np.repeat(samples[:, None], channels, axis=1).reshape(-1)
    payload = interleaved.astype("<f4").tobytes() if float32 else to_s16(interleaved).tobytes()
    bits = 32 if float32 else 16
    tag = 3 if float32 else 1
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"  # an odd-sized chunk before the data, padded
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize(
    ("channels", "float32", "extensible"),
    [(1, False, False), (2, False, False), (2, True, False), (1, False, True)],
)
def test_pcm_wav_fast_path_matches_ffmpeg(channels: int, float32: bool, extensible: bool) -> None:
    from voice_common.audio.decoding import _decode_with_ffmpeg

    data = _wav(speechlike(2.0, rate=44100), 44100, channels=channels, float32=float32, extensible=extensible)
    fast = _fast_path(data, 24000, None)
    assert fast is not None, "a plain PCM WAV takes the fast path"
    slow = _decode_with_ffmpeg(data, 24000, None)
    assert fast.source_channels == slow.source_channels == channels
    assert fast.source_sample_rate == slow.source_sample_rate == 44100
    assert abs(fast.samples.size - slow.samples.size) <= 2
    n = min(fast.samples.size, slow.samples.size)
    # Two good resamplers (soxr, swresample) differ only far below the 16-bit noise floor.
    assert np.max(np.abs(fast.samples[100 : n - 100] - slow.samples[100 : n - 100])) < 2e-3


def _fast_path(data: bytes, target_rate: int, max_seconds: float | None) -> DecodedAudio | None:
    from voice_common.audio.decoding import _decode_pcm_wav, _wav_layout

    layout = _wav_layout(data)
    assert layout is not None
    return _decode_pcm_wav(data, layout, target_rate, max_seconds)


def test_streamed_wav_sizes_are_handled() -> None:
    data = bytearray(_wav(speechlike(2.0), 24000, channels=1))
    data[4:8] = b"\xff\xff\xff\xff"
    data[-4 - 96000 : -96000] = b"\xff\xff\xff\xff"  # the data chunk's size, as a live stream writes it
    decoded = _fast_path(bytes(data), 24000, None)
    assert decoded is not None and decoded.duration_seconds == pytest.approx(2.0)
    cut = _fast_path(bytes(data[: len(data) // 2]), 24000, None)
    assert cut is not None and 0.9 < cut.duration_seconds < 1.1


def test_other_wav_flavours_fall_back_to_ffmpeg() -> None:
    from voice_common.audio.decoding import _wav_layout

    pcm24 = bytearray(_wav(speechlike(1.0), 24000, channels=1))
    pcm24[34:36] = (24).to_bytes(2, "little")  # bits per sample
    assert _fast_path(bytes(pcm24), 24000, None) is None
    assert _wav_layout(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(40)) is None
    with pytest.raises(AudioTooLongError):
        _fast_path(_wav(speechlike(3.0), 24000, channels=1), 24000, 2.0)
