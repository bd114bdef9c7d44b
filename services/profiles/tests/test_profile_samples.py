"""Reference samples through a real server: every accepted container, normalisation, warnings, audio back out."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from field_helpers import add_sample, new_profile
from google.protobuf import field_mask_pb2
from profiles_harness import Harness, expect_error, tenant_metadata

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_common.audio import decode_audio, decode_linear16
from voice_testing.media_files import encode_file, speechlike, wav_data_size, with_wav_data_size

ACCEPTED = ["wav", "mp3", "m4a", "aac", "ogg_opus", "ogg_vorbis", "flac", "mp4", "mov", "webm", "mkv"]


@pytest.mark.parametrize("kind", ACCEPTED)
async def test_every_accepted_format_is_normalised_to_24k_mono(
    harness: Harness, tenant: str, kind: str
) -> None:
    profile = await new_profile(harness, tenant)
    data = encode_file(speechlike(3.0, rate=48000, seed=1), 48000, kind, channels=2)
    sample = await add_sample(harness, tenant, profile.id, data, file_name=f"clip.{kind}")
    assert sample.sample_rate_hertz == 24000
    assert sample.duration_seconds == pytest.approx(3.0, abs=0.1)
    assert sample.transcript_state == pb.TRANSCRIPT_STATE_PROVIDED
    assert sample.original_size_bytes == len(data)
    assert sample.file_name == f"clip.{kind}"
    assert len(sample.audio_sha256) == 64
    assert -30 < sample.rms_dbfs < -5 and sample.peak_dbfs <= 0
    assert list(sample.warnings) == []
    keys = await harness.objects(tenant)
    assert keys == sorted(
        [
            f"tenants/{tenant}/samples/{sample.id}/original",
            f"tenants/{tenant}/samples/{sample.id}/normalized.wav",
        ]
    )


async def test_sample_without_text_needs_a_transcript_and_can_be_edited(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(
        harness, tenant, profile.id, encode_file(speechlike(2.5), 24000, "wav"), text=None
    )
    assert sample.transcript_state == pb.TRANSCRIPT_STATE_NEEDED and sample.reference_text == ""
    md = tenant_metadata(tenant)
    edited = (
        await harness.stub.UpdateSample(
            pb.UpdateSampleRequest(
                sample=pb.Sample(id=sample.id, reference_text="  Now it has words.  "),
                update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
            ),
            metadata=md,
        )
    ).sample
    assert (
        edited.reference_text == "Now it has words."
        and edited.transcript_state == pb.TRANSCRIPT_STATE_PROVIDED
    )
    listed = (
        await harness.stub.ListSamples(pb.ListSamplesRequest(profile_id=profile.id), metadata=md)
    ).samples
    assert [s.reference_text for s in listed] == ["Now it has words."]


async def test_clipping_and_low_level_warnings(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    loud = np.clip(speechlike(3.0, seed=2, amplitude=1.0) * 4, -1, 1)
    sample = await add_sample(harness, tenant, profile.id, encode_file(loud, 24000, "wav"))
    assert [w.code for w in sample.warnings] == [pb.SAMPLE_WARNING_CODE_CLIPPING]
    assert "clipped" in sample.warnings[0].message
    quiet = speechlike(3.0, seed=3, amplitude=0.02)
    sample = await add_sample(harness, tenant, profile.id, encode_file(quiet, 24000, "wav"))
    assert [w.code for w in sample.warnings] == [pb.SAMPLE_WARNING_CODE_LOW_LEVEL]


async def test_wav_that_declares_no_length_is_read_to_its_end_with_a_warning(
    harness: Harness, tenant: str
) -> None:
    # 0xFFFFFFFF is what ffmpeg writes as the data size when it streams a WAV to a pipe: nothing to check a cut
    # against, so the sample is kept and the uploader told.
    profile = await new_profile(harness, tenant)
    data = with_wav_data_size(encode_file(speechlike(3.0, seed=4), 24000, "wav"), 0xFFFFFFFF)
    sample = await add_sample(harness, tenant, profile.id, data)
    assert sample.duration_seconds == pytest.approx(3.0, abs=0.001)
    assert [w.code for w in sample.warnings] == [pb.SAMPLE_WARNING_CODE_TRUNCATED]
    assert "does not declare" in sample.warnings[0].message
    listed = (
        await harness.stub.ListSamples(
            pb.ListSamplesRequest(profile_id=profile.id), metadata=tenant_metadata(tenant)
        )
    ).samples
    assert [list(s.warnings) for s in listed] == [list(sample.warnings)]


async def test_wav_short_of_its_declared_size_by_less_than_a_frame_is_accepted(
    harness: Harness, tenant: str
) -> None:
    profile = await new_profile(harness, tenant)
    whole = encode_file(speechlike(3.0, seed=5), 24000, "wav", channels=2)  # 4-byte frames
    data = with_wav_data_size(whole, wav_data_size(whole) + 3)
    sample = await add_sample(harness, tenant, profile.id, data)
    assert sample.duration_seconds == pytest.approx(3.0, abs=0.001)
    assert list(sample.warnings) == []


@pytest.mark.parametrize("kind", ["mp3", "flac"])
async def test_compressed_file_cut_in_half_keeps_its_first_half_with_a_warning(
    harness: Harness, tenant: str, kind: str
) -> None:
    profile = await new_profile(harness, tenant)
    whole = encode_file(speechlike(6.0, seed=6), 24000, kind)
    sample = await add_sample(harness, tenant, profile.id, whole[: len(whole) // 2])
    assert 2.0 < sample.duration_seconds < 3.5
    assert [w.code for w in sample.warnings] == [pb.SAMPLE_WARNING_CODE_TRUNCATED]
    assert "6.00 s" in sample.warnings[0].message


async def test_profile_counts_its_samples(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    md = tenant_metadata(tenant)
    # Read it first, so a cached copy exists that adding samples must replace.
    before = (await harness.stub.GetProfile(pb.GetProfileRequest(id=profile.id), metadata=md)).profile
    assert before.sample_count == 0
    for seconds in (2.5, 3.5):
        await add_sample(harness, tenant, profile.id, encode_file(speechlike(seconds), 24000, "wav"))
    got = (
        await harness.stub.GetProfile(pb.GetProfileRequest(id=profile.id), metadata=tenant_metadata(tenant))
    ).profile
    assert got.sample_count == 2
    assert got.total_sample_seconds == pytest.approx(6.0, abs=0.01)


async def test_list_samples_pages(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    data = encode_file(speechlike(2.2), 24000, "wav")
    ids = [(await add_sample(harness, tenant, profile.id, data)).id for _ in range(3)]
    md = tenant_metadata(tenant)
    first = await harness.stub.ListSamples(
        pb.ListSamplesRequest(profile_id=profile.id, page_size=2), metadata=md
    )
    second = await harness.stub.ListSamples(
        pb.ListSamplesRequest(profile_id=profile.id, page_size=2, page_token=first.next_page_token),
        metadata=md,
    )
    assert [s.id for s in [*first.samples, *second.samples]] == list(reversed(ids))
    assert second.next_page_token == ""


async def collect_audio(stream: object) -> tuple[pb.AudioStreamHeader, bytes]:
    header = None
    data = bytearray()
    async for message in stream:  # type: ignore[attr-defined]
        if message.WhichOneof("payload") == "header":
            assert header is None, "one header, first"
            header = message.header
        else:
            assert header is not None, "the header comes first"
            assert message.chunk.offset_bytes == len(data)
            data += message.chunk.data
    assert header is not None
    return header, bytes(data)


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (audio_pb2.AUDIO_ENCODING_UNSPECIFIED, 0),
        (audio_pb2.AUDIO_ENCODING_WAV, 16000),
        (audio_pb2.AUDIO_ENCODING_LINEAR16, 8000),
        (audio_pb2.AUDIO_ENCODING_FLAC, 24000),
        (audio_pb2.AUDIO_ENCODING_OGG_OPUS, 48000),
        (audio_pb2.AUDIO_ENCODING_MP3, 22050),
    ],
)
async def test_sample_audio_in_every_encoding(
    harness: Harness, tenant: str, encoding: Any, rate: int
) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, encode_file(speechlike(4.0), 24000, "flac"))
    header, data = await collect_audio(
        harness.stub.GetSampleAudio(
            pb.GetSampleAudioRequest(
                id=sample.id, format=audio_pb2.AudioFormat(encoding=encoding, sample_rate_hertz=rate)
            ),
            metadata=tenant_metadata(tenant),
        )
    )
    expected_rate = rate or 24000
    assert header.format.sample_rate_hertz == expected_rate
    assert header.duration_seconds == pytest.approx(4.0, abs=0.01)
    if encoding == audio_pb2.AUDIO_ENCODING_LINEAR16:
        decoded = decode_linear16(data, expected_rate, target_rate=expected_rate)
    else:
        decoded = decode_audio(data, target_rate=expected_rate)
    # Lossy codecs pad to whole frames; everything must still be the clip's length within a codec frame.
    assert decoded.duration_seconds == pytest.approx(4.0, abs=0.08)


async def test_original_audio_comes_back_byte_for_byte(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    data = encode_file(speechlike(3.0, rate=44100), 44100, "mp3")
    sample = await add_sample(harness, tenant, profile.id, data, mime_type="audio/mpeg")
    header, got = await collect_audio(
        harness.stub.GetSampleAudio(
            pb.GetSampleAudioRequest(id=sample.id, original=True), metadata=tenant_metadata(tenant)
        )
    )
    assert got == data and header.mime_type == "audio/mpeg"


async def test_delete_sample_removes_row_and_objects(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, encode_file(speechlike(2.5), 24000, "wav"))
    md = tenant_metadata(tenant)
    await harness.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=md)
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["samples"] == 0
    await expect_error(
        harness.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_delete_profile_removes_its_samples(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    for _ in range(2):
        await add_sample(harness, tenant, profile.id, encode_file(speechlike(2.5), 24000, "wav"))
    response = await harness.stub.DeleteProfile(
        pb.DeleteProfileRequest(id=profile.id), metadata=tenant_metadata(tenant)
    )
    assert response.deleted_sample_count == 2
    assert await harness.objects(tenant) == []
    assert await harness.rows(tenant) == {"profiles": 0, "samples": 0, "generations": 0}


async def test_samples_of_another_tenant_are_invisible(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, encode_file(speechlike(2.5), 24000, "wav"))
    intruder = tenant_metadata(tenant + "-x")
    await expect_error(
        harness.stub.GetSampleAudio(pb.GetSampleAudioRequest(id=sample.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        harness.stub.DeleteSample(pb.DeleteSampleRequest(id=sample.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        harness.stub.ListSamples(pb.ListSamplesRequest(profile_id=profile.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        harness.stub.UpdateSample(
            pb.UpdateSampleRequest(
                sample=pb.Sample(id=sample.id, reference_text="mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
            ),
            metadata=intruder,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(await harness.objects(tenant)) == 2
