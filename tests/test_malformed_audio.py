"""Malformed audio through every public entry point that takes audio, via the gateway, in front of the real services.

Each case (truncated WAV/FLAC/MP3/Ogg Opus, a container's header on another's data, RIFF chunk sizes that lie, a
WAV declaring 4 GB of data, zero bytes, noise, a valid container with an absurd sample rate or channel count, float
samples that are NaN) goes to AddSample (the upload), Transcribe (inline), StreamingTranscribe (as the encoding its
name claims; a few also as LINEAR16) and a synthesis with an inline reference clip (Synthesize, SynthesizeStream). What
must hold, as for the fuzzing (tests/test_fuzz_public_rpcs.py): OK or a precise refusal, never INTERNAL, UNKNOWN or
a hang; a refused call writes nothing; an accepted upload can be read back, transcribed and converted; afterwards
every service still serves and ``voice-admin doctor`` finds nothing orphaned.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from e2e_support import SERVING
from hostile_input_support import (
    BACKENDS,
    PRECISE_REFUSALS,
    Answer,
    Platform,
    call,
    doctor,
    running_platform,
    stored,
    unhandled_errors,
)

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_gateway.routes import Route, public_routes
from voice_testing.media_files import encode_file, speechlike, with_wav_data_size

pytestmark = pytest.mark.slow

RATE = 16_000
ENCODINGS: dict[str, audio_pb2.AudioEncoding] = {
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "mp3": audio_pb2.AUDIO_ENCODING_MP3,
    "ogg_opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
}
ANSWERS: Counter[str] = Counter()


def _wav(
    samples: bytes,
    *,
    rate: int = RATE,
    channels: int = 1,
    bits: int = 16,
    format_tag: int = 1,
    block_align: int | None = None,
    byte_rate: int | None = None,
    fmt_size: int = 16,
    riff_size: int | None = None,
    data_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file written field by field, so any field can lie."""
    align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack(
        "<HHIIHH", format_tag, channels, rate, rate * align if byte_rate is None else byte_rate, align, bits
    )
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", fmt_size)
        + fmt
        + b"data"
        + struct.pack("<I", len(samples) if data_size is None else data_size)
        + samples
    )
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _pcm(seconds: float) -> bytes:
    return (speechlike(seconds, RATE) * 32767).astype("<i2").tobytes()


def malformed_cases() -> dict[str, bytes]:
    """Name -> bytes of every malformed (or merely strange) file."""
    speech = speechlike(2.0, RATE)
    files = {kind: encode_file(speech, RATE, kind) for kind in ENCODINGS}
    pcm = _pcm(2.0)
    noise = np.random.default_rng(13).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes()
    cases = {
        "empty": b"",
        "one_byte": b"R",
        "riff_only": b"RIFF",
        "noise": noise,
        "zeros": bytes(64 * 1024),
        "wav_header_only": _wav(b""),
        "wav_one_sample": _wav(b"\x01\x00"),
        "wav_odd_byte_count": _wav(pcm[:3001]),
        "wav_declares_4_gb": with_wav_data_size(files["wav"], 0xFFFFFFFE),
        "wav_declares_unknown_size": with_wav_data_size(files["wav"], 0xFFFFFFFF),
        "wav_declares_more_than_it_holds": with_wav_data_size(files["wav"], len(pcm) * 3),
        "wav_riff_size_zero": _wav(pcm, riff_size=0),
        "wav_riff_size_huge": _wav(pcm, riff_size=0xFFFFFFFF),
        "wav_fmt_size_huge": _wav(pcm, fmt_size=0xFFFFFFFF),
        "wav_fmt_size_zero": _wav(pcm, fmt_size=0),
        "wav_rate_zero": _wav(pcm, rate=0),
        "wav_rate_one": _wav(pcm, rate=1),
        "wav_rate_max": _wav(pcm, rate=0xFFFFFFFF, byte_rate=0xFFFFFFFF),
        "wav_channels_zero": _wav(pcm, channels=0, block_align=2),
        "wav_channels_65535": _wav(pcm, channels=65535, block_align=2),
        "wav_bits_zero": _wav(pcm, bits=0, block_align=2),
        "wav_bits_7": _wav(pcm, bits=7),
        "wav_bits_64_int": _wav(pcm, bits=64),
        "wav_block_align_zero": _wav(pcm, block_align=0),
        "wav_format_tag_unknown": _wav(pcm, format_tag=0x1234),
        "wav_extensible_without_extension": _wav(pcm, format_tag=0xFFFE),
        "wav_float_nan_and_inf": _wav(
            np.array([np.nan, np.inf, -np.inf, 0.5] * 8000, dtype="<f4").tobytes(), bits=32, format_tag=3
        ),
        "wav_float_huge_values": _wav(np.full(32000, 1e30, dtype="<f4").tobytes(), bits=32, format_tag=3),
        "wav_header_on_mp3": _wav(b"")[:-4] + struct.pack("<I", len(files["mp3"])) + files["mp3"],
        "flac_magic_on_wav": b"fLaC" + files["wav"][4:],
        "id3_then_noise": b"ID3\x04\x00\x00\x00\x00\x00\x10" + noise[:4096],
        "mp3_frame_sync_then_noise": b"\xff\xfb\x90\x64" + noise[:4096],
        "oggs_then_noise": b"OggS\x00\x02" + noise[:4096],
    }
    for kind, data in files.items():
        cases[f"{kind}_first_100_bytes"] = data[:100]
        cases[f"{kind}_cut_at_half"] = data[: len(data) // 2]
        cases[f"{kind}_middle_only"] = data[len(data) // 3 : 2 * len(data) // 3]
    # FLAC STREAMINFO (after "fLaC" and the 4-byte block header): 20 bits of sample rate, 3 of channels - 1.
    flac = bytearray(files["flac"])
    flac[18:21] = bytes([0xFF, 0xFF, 0xF0 | (flac[20] & 0x0F)])  # 1 048 575 Hz
    cases["flac_absurd_sample_rate"] = bytes(flac)
    flac = bytearray(files["flac"])
    flac[18:21] = bytes([0x00, 0x00, flac[20] & 0x0F])  # 0 Hz
    cases["flac_zero_sample_rate"] = bytes(flac)
    return cases


CASES = malformed_cases()
# Also sent to a live stream as raw LINEAR16 (any bytes are samples there; one byte short of a sample is not).
RAW_CASES = {"one_byte", "noise", "zeros", "wav_odd_byte_count", "wav_float_nan_and_inf"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("malformed")) as started:
        yield started


@pytest.fixture(scope="module")
def profile_id(platform: Platform) -> str:
    created = call(
        platform, route("ProfileService", "CreateProfile"), pb.CreateProfileRequest(name="Malformed")
    )
    assert created.ok, created
    return str(created.responses[0].profile.id)


def route(service: str, name: str) -> Route:
    return next(r for r in public_routes().values() if r.service.endswith(f".{service}") and r.name == name)


def halves(data: bytes) -> list[bytes]:
    return [data[: len(data) // 2], data[len(data) // 2 :]]


def checked(platform: Platform, label: str, service: str, name: str, requests: Any) -> Answer:
    """The call's answer, once it is shown to be OK or a precise refusal that wrote nothing."""
    before = stored(platform)
    answer = call(platform, route(service, name), requests, timeout=120)
    ANSWERS[f"{name} {answer.code.name}"] += 1
    assert answer.ok or answer.code in PRECISE_REFUSALS, (
        f"{label}: {name} answered {answer.code.name}: {answer.details}; the services logged: "
        f"{unhandled_errors(platform.processes().values())[-2:]}"
    )
    if not answer.ok:
        added = stored(platform).added_since(before)
        assert not added, f"{label}: {name} refused ({answer.code.name}: {answer.details}) but wrote {added}"
    return answer


def claimed_encoding(label: str) -> audio_pb2.AudioEncoding:
    """The encoding a case's name says its bytes are (a live stream declares one)."""
    for kind, encoding in ENCODINGS.items():
        if label.startswith(kind):
            return encoding
    return audio_pb2.AUDIO_ENCODING_WAV


@pytest.mark.parametrize("label", sorted(CASES))
def test_malformed_audio_gets_a_precise_answer_everywhere_and_refusals_write_nothing(
    platform: Platform, profile_id: str, label: str
) -> None:
    data = CASES[label]
    check: Callable[..., Answer] = lambda service, name, requests: checked(  # noqa: E731
        platform, label, service, name, requests
    )

    upload = check(
        "ProfileService",
        "AddSample",
        [
            pb.AddSampleRequest(
                metadata=pb.SampleMetadata(
                    profile_id=profile_id, reference_text="Some words.", file_name=label
                )
            ),
            *[pb.AddSampleRequest(chunk=part) for part in halves(data) if part],
        ],
    )
    if upload.ok:
        # What was accepted must be usable: read back as sent and converted, and transcribed from the store.
        sample_id = upload.responses[0].sample.id
        linear16 = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=8000)
        original = check(
            "ProfileService", "GetSampleAudio", pb.GetSampleAudioRequest(id=sample_id, original=True)
        )
        assert original.ok, original
        assert b"".join(r.chunk.data for r in original.responses if r.HasField("chunk")) == data
        assert check(
            "ProfileService", "GetSampleAudio", pb.GetSampleAudioRequest(id=sample_id, format=linear16)
        ).ok
        assert check("AsrService", "Transcribe", asr_pb.TranscribeRequest(sample_id=sample_id)).ok
        assert check("ProfileService", "DeleteSample", pb.DeleteSampleRequest(id=sample_id)).ok

    check("AsrService", "Transcribe", asr_pb.TranscribeRequest(content=data))

    formats = [audio_pb2.AudioFormat(encoding=claimed_encoding(label))]
    if label in RAW_CASES:
        formats.append(
            audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE)
        )
    for audio_format in formats:
        check(
            "AsrService",
            "StreamingTranscribe",
            [
                asr_pb.StreamingTranscribeRequest(config=asr_pb.StreamingConfig(format=audio_format)),
                *[asr_pb.StreamingTranscribeRequest(audio=part) for part in halves(data) if part],
            ],
        )

    config = tts_pb.SynthesisConfig(
        voice=tts_pb.Voice(reference=tts_pb.VoiceReference(audio=data, transcript="Some words.")),
        language="en",
        sampling=tts_pb.SamplingParameters(max_new_tokens=2),
    )
    check("TtsService", "Synthesize", tts_pb.SynthesizeRequest(config=config, text="Hello."))
    check("TtsService", "SynthesizeStream", tts_pb.SynthesizeStreamRequest(config=config, text="Hello."))


@pytest.mark.parametrize("rate", [0, 1, 7999, 2**31 - 1, -1])
def test_a_live_stream_with_an_absurd_declared_rate_or_channels_is_refused_precisely(
    platform: Platform, rate: int
) -> None:
    pcm = _pcm(0.5)
    for channels in (0, 1, 2, 255, -1):
        audio_format = audio_pb2.AudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=rate, channels=channels
        )
        checked(
            platform,
            f"LINEAR16 at {rate} Hz, {channels} channels",
            "AsrService",
            "StreamingTranscribe",
            [
                asr_pb.StreamingTranscribeRequest(config=asr_pb.StreamingConfig(format=audio_format)),
                *[asr_pb.StreamingTranscribeRequest(audio=part) for part in halves(pcm)],
            ],
        )


def test_after_the_malformed_audio_every_service_serves_and_nothing_is_orphaned(platform: Platform) -> None:
    """Run after the cases above (the module in order)."""
    assert sum(ANSWERS.values()) >= len(CASES) * 5, f"run the whole module: {ANSWERS}"
    print(f"\nmalformed audio answers: {dict(sorted(ANSWERS.items()))}")
    for name, process in platform.processes().items():
        assert process.popen.poll() is None, f"{name} died: {process.describe()}"
        assert process.health_status() == SERVING, name
    for service_name in BACKENDS:
        assert platform.gateway.health_status(service_name) == SERVING, service_name
    assert not unhandled_errors(platform.processes().values())
    report = doctor(platform.env)
    assert report["exit_code"] == 0, report
    assert report["objects_without_rows"] == [] and report["rows_without_objects"] == [], report
    assert grpc.StatusCode.INTERNAL.name not in " ".join(ANSWERS)
