"""Generation history through a real server: store, read, filter, page, stats, audio, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from field_helpers import new_profile
from google.protobuf import timestamp_pb2
from profiles_harness import Harness, expect_error, tenant_metadata
from test_profile_samples import collect_audio

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_common.audio import decode_audio
from voice_common.audio.encoding import to_s16
from voice_testing.media_files import encode_file, speechlike


async def store_generation(harness: Harness, tenant: str, data: bytes, **metadata: object) -> pb.Generation:
    fields: dict[str, object] = {"text": "Good morning.", "language": "en"}
    fields.update(metadata)
    messages = [ingest_pb.CreateGenerationRequest(metadata=ingest_pb.GenerationMetadata(**fields))]  # type: ignore[arg-type]
    messages += [
        ingest_pb.CreateGenerationRequest(chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)
    ]
    response = await harness.ingest.CreateGeneration(iter(messages), metadata=tenant_metadata(tenant))
    return response.generation


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


async def test_store_linear16_generation_with_its_parameters(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant, name="Speaker")
    pcm = to_s16(speechlike(2.0)).tobytes()
    generation = await store_generation(
        harness,
        tenant,
        pcm,
        profile_id=profile.id,
        text="Hello world",
        seed=1234,
        parameters={"temperature": 0.9, "top_k": 50},
        model_id="Qwen/Qwen3-TTS-12Hz-0.6B-Base",
        format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=24000),
        duration_seconds=2.0,
    )
    assert generation.profile_id == profile.id and generation.profile_name == "Speaker"
    assert generation.seed == 1234 and dict(generation.parameters) == {"temperature": 0.9, "top_k": 50}
    assert generation.duration_seconds == pytest.approx(2.0)
    assert not generation.HasField("expire_time")
    got = await harness.stub.GetGeneration(
        pb.GetGenerationRequest(id=generation.id), metadata=tenant_metadata(tenant)
    )
    assert got.generation == generation
    header, data = await collect_audio(
        harness.stub.GetGenerationAudio(
            pb.GetGenerationAudioRequest(
                id=generation.id, format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16)
            ),
            metadata=tenant_metadata(tenant),
        )
    )
    # Stored losslessly: the PCM comes back exactly.
    assert data == pcm and header.format.sample_rate_hertz == 24000


async def test_preview_without_profile_expires_in_20_minutes(harness: Harness, tenant: str) -> None:
    generation = await store_generation(
        harness, tenant, encode_file(speechlike(1.0), 24000, "wav"), preview=True
    )
    assert generation.profile_id == ""
    life = generation.expire_time.ToDatetime(tzinfo=UTC) - generation.create_time.ToDatetime(tzinfo=UTC)
    assert abs(life - timedelta(minutes=20)) < timedelta(seconds=1)


async def test_list_filters_pages_and_stats(harness: Harness, tenant: str) -> None:
    alice = await new_profile(harness, tenant, name="Alice")
    bob = await new_profile(harness, tenant, name="Bob")
    clip = encode_file(speechlike(1.0), 24000, "wav")
    made = []
    for index, (profile, text) in enumerate(
        [(alice, "The quick brown fox"), (alice, "jumps over"), (bob, "the LAZY dog"), (bob, "Brown bread")]
    ):
        made.append(
            await store_generation(harness, tenant, clip, profile_id=profile.id, text=text, seed=index)
        )
    md = tenant_metadata(tenant)

    async def texts(**filters: object) -> list[str]:
        response = await harness.stub.ListGenerations(pb.ListGenerationsRequest(**filters), metadata=md)  # type: ignore[arg-type]
        return [g.text for g in response.generations]

    assert await texts() == ["Brown bread", "the LAZY dog", "jumps over", "The quick brown fox"]
    assert await texts(profile_id=alice.id) == ["jumps over", "The quick brown fox"]
    assert await texts(text_contains="BROWN") == ["Brown bread", "The quick brown fox"]
    assert await texts(text_contains="lazy", profile_id=alice.id) == []
    third = made[2].create_time.ToDatetime(tzinfo=UTC)
    assert await texts(create_time_start=made[2].create_time) == ["Brown bread", "the LAZY dog"]
    assert await texts(create_time_end=stamp(third)) == ["jumps over", "The quick brown fox"]

    first = await harness.stub.ListGenerations(pb.ListGenerationsRequest(page_size=3), metadata=md)
    rest = await harness.stub.ListGenerations(
        pb.ListGenerationsRequest(page_size=3, page_token=first.next_page_token), metadata=md
    )
    assert len(first.generations) == 3 and len(rest.generations) == 1 and not rest.next_page_token

    stats = await harness.stub.GetGenerationStats(pb.GetGenerationStatsRequest(), metadata=md)
    assert stats.count == 4 and stats.total_duration_seconds == pytest.approx(4.0, abs=0.01)
    assert sorted((s.profile_name, s.count) for s in stats.by_profile) == [("Alice", 2), ("Bob", 2)]
    only_bob = await harness.stub.GetGenerationStats(
        pb.GetGenerationStatsRequest(profile_id=bob.id), metadata=md
    )
    assert only_bob.count == 2 and [s.profile_id for s in only_bob.by_profile] == [bob.id]
    # Another tenant sees none of it.
    other = await harness.stub.GetGenerationStats(
        pb.GetGenerationStatsRequest(), metadata=tenant_metadata(tenant + "-b")
    )
    assert other.count == 0 and list(other.by_profile) == []


async def test_generation_audio_resampled_to_mp3(harness: Harness, tenant: str) -> None:
    generation = await store_generation(
        harness, tenant, encode_file(speechlike(3.0, rate=48000), 48000, "flac")
    )
    assert generation.sample_rate_hertz == 24000
    header, data = await collect_audio(
        harness.stub.GetGenerationAudio(
            pb.GetGenerationAudioRequest(
                id=generation.id,
                format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_MP3, sample_rate_hertz=16000),
            ),
            metadata=tenant_metadata(tenant),
        )
    )
    assert header.mime_type == "audio/mpeg"
    assert decode_audio(data, target_rate=16000).duration_seconds == pytest.approx(3.0, abs=0.08)


async def test_history_outlives_its_profile_unless_asked(harness: Harness, tenant: str) -> None:
    md = tenant_metadata(tenant)
    clip = encode_file(speechlike(1.0), 24000, "wav")
    kept_profile = await new_profile(harness, tenant, name="Kept history")
    kept = await store_generation(harness, tenant, clip, profile_id=kept_profile.id)
    response = await harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=kept_profile.id), metadata=md)
    assert response.deleted_generation_count == 0
    still = (await harness.stub.GetGeneration(pb.GetGenerationRequest(id=kept.id), metadata=md)).generation
    assert still.profile_id == kept_profile.id and still.profile_name == "Kept history"

    gone_profile = await new_profile(harness, tenant, name="Gone history")
    gone = await store_generation(harness, tenant, clip, profile_id=gone_profile.id)
    response = await harness.stub.DeleteProfile(
        pb.DeleteProfileRequest(id=gone_profile.id, delete_generations=True), metadata=md
    )
    assert response.deleted_generation_count == 1
    await expect_error(
        harness.stub.GetGeneration(pb.GetGenerationRequest(id=gone.id), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await harness.objects(tenant) == [f"tenants/{tenant}/generations/{kept.id}/audio.wav"]


async def test_delete_generation(harness: Harness, tenant: str) -> None:
    generation = await store_generation(harness, tenant, encode_file(speechlike(1.0), 24000, "wav"))
    md = tenant_metadata(tenant)
    intruder = tenant_metadata(tenant + "-x")
    await expect_error(
        harness.stub.DeleteGeneration(pb.DeleteGenerationRequest(id=generation.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        harness.stub.GetGenerationAudio(pb.GetGenerationAudioRequest(id=generation.id), metadata=intruder),
        grpc.StatusCode.NOT_FOUND,
    )
    await harness.stub.DeleteGeneration(pb.DeleteGenerationRequest(id=generation.id), metadata=md)
    assert await harness.objects(tenant) == []
    assert (await harness.rows(tenant))["generations"] == 0
