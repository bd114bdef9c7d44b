"""Streaming decoding of every input format: real speech (recorded in tests/speech), encoded, fed in small
odd-sized pieces, must decode to what decoding the whole file gives."""

from __future__ import annotations

import numpy as np
import pytest

from voice_asr.stream_decoder import StreamDecodeError, open_stream_decoder
from voice_common.audio import AudioEncoding, decode_audio, encode_audio
from voice_common.errors import InvalidArgument
from voice_testing.speech import SENTENCES, speak


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 4 s of real speech (flite's rms voice) at 16 kHz."""
    return speak(SENTENCES[1], "rms")


def _feed_in_pieces(encoding: AudioEncoding, data: bytes, rate: int = 0, piece: int = 997) -> np.ndarray:
    decoder = open_stream_decoder(encoding, rate)
    out = [decoder.feed(data[i : i + piece]) for i in range(0, len(data), piece)]
    out.append(decoder.finish())
    decoder.close()
    for samples in out:
        assert samples.dtype == np.float32 and samples.ndim == 1
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_asr_linear16_at_any_rate_matches_whole_decoding(speech: np.ndarray, rate: int) -> None:
    data = encode_audio(speech, 16000, AudioEncoding.LINEAR16, target_rate=rate)
    streamed = _feed_in_pieces(AudioEncoding.LINEAR16, data, rate)  # 997: pieces end mid-sample
    whole = decode_audio(encode_audio(speech, 16000, AudioEncoding.WAV, target_rate=rate), target_rate=16000)
    assert len(streamed) == len(whole.samples)
    # soxr's stream resampler gives what one-shot resampling gives, up to float rounding.
    assert np.max(np.abs(streamed - whole.samples)) < 1e-3


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (AudioEncoding.WAV, 16000),
        (AudioEncoding.WAV, 44100),
        (AudioEncoding.FLAC, 16000),
        (AudioEncoding.FLAC, 48000),
        (AudioEncoding.OGG_OPUS, 48000),
        (AudioEncoding.OGG_OPUS, 16000),
        (AudioEncoding.MP3, 24000),
        (AudioEncoding.MP3, 16000),
        (AudioEncoding.AAC, 24000),
    ],
)
def test_asr_containers_decode_in_pieces_like_the_whole_file(
    speech: np.ndarray, encoding: AudioEncoding, rate: int
) -> None:
    data = encode_audio(speech, 16000, encoding, target_rate=rate)
    streamed = _feed_in_pieces(encoding, data)
    whole = decode_audio(data, target_rate=16000).samples
    # MP3 without a LAME header keeps the encoder's padding: a frame or so more than FFmpeg's whole-file decode.
    assert abs(len(streamed) - len(whole)) <= 1152 * 16000 // rate + 64
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
    assert abs(len(streamed) / 16000 - len(speech) / 16000) < 0.1


@pytest.mark.parametrize(
    "encoding", [AudioEncoding.FLAC, AudioEncoding.OGG_OPUS, AudioEncoding.MP3, AudioEncoding.AAC]
)
def test_asr_container_samples_come_out_before_the_stream_ends(
    speech: np.ndarray, encoding: AudioEncoding
) -> None:
    data = encode_audio(speech, 16000, encoding)
    decoder = open_stream_decoder(encoding)
    half = len(data) // 2
    early = sum(len(decoder.feed(data[i : i + 997])) for i in range(0, half, 997))
    decoder.close()  # abandoned midway: the reader thread must end
    assert early > 0.2 * len(speech)  # FLAC frames are 4608 samples, and silence compresses smaller


@pytest.mark.parametrize(
    "encoding", [AudioEncoding.WAV, AudioEncoding.FLAC, AudioEncoding.OGG_OPUS, AudioEncoding.MP3]
)
def test_asr_garbage_bytes_raise_a_clear_error(encoding: AudioEncoding) -> None:
    rng = np.random.default_rng(7)
    decoder = open_stream_decoder(encoding)
    with pytest.raises(StreamDecodeError, match=f"could not be decoded as {encoding.name}") as caught:
        for _ in range(200):
            decoder.feed(rng.bytes(997))
        decoder.finish()
    decoder.close()
    assert isinstance(caught.value, InvalidArgument)


@pytest.mark.parametrize("encoding", [AudioEncoding.WAV, AudioEncoding.FLAC, AudioEncoding.MP3])
def test_asr_an_empty_or_cut_stream_is_an_error(speech: np.ndarray, encoding: AudioEncoding) -> None:
    with pytest.raises(StreamDecodeError, match="empty"):
        open_stream_decoder(encoding).finish()
    header_only = encode_audio(speech, 16000, encoding)[:20]
    decoder = open_stream_decoder(encoding)
    decoder.feed(header_only)
    with pytest.raises(StreamDecodeError):
        decoder.finish()


@pytest.mark.parametrize("rate", [0, 7999, 48001, 96000])
def test_asr_linear16_rate_outside_8_to_48_khz_is_refused(rate: int) -> None:
    with pytest.raises(InvalidArgument, match="sample rate") as caught:
        open_stream_decoder(AudioEncoding.LINEAR16, rate)
    assert caught.value.field == "format.sample_rate_hertz"


def test_asr_wav_that_is_not_16_bit_pcm_is_refused() -> None:
    header = bytearray(b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    header += (16000).to_bytes(4, "little") + (1).to_bytes(2, "little") + (8).to_bytes(2, "little")
    header += b"data\xff\xff\xff\xff" + bytes(100)
    with pytest.raises(StreamDecodeError, match="8-bit"):
        open_stream_decoder(AudioEncoding.WAV).feed(bytes(header))
