"""Every kind of bad request gets a precise status and a message a person can act on, and leaves nothing behind.

Each case runs in a fresh tenant that already holds one profile with one sample (and one generation); after the
failed call the tenant's rows and objects must be exactly what they were.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from field_helpers import add_sample, new_profile
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from profiles_harness import Harness, expect_error, sample_requests, tenant_metadata

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_testing.media_files import encode_file, speechlike, wav_data_size, with_wav_data_size
from voice_testing.status_details import field_violations, trailing_metadata_bytes

MISSING_ID = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    harness: Harness
    tenant: str
    profile: pb.Profile
    sample: pb.Sample

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return tenant_metadata(self.tenant)

    def add_sample(self, messages: list[pb.AddSampleRequest]) -> object:
        return self.harness.stub.AddSample(iter(messages), metadata=self.md)

    def upload(self, data: bytes, **kwargs: Any) -> object:
        return self.add_sample(sample_requests(self.profile.id, data, **kwargs))

    def generation(self, data: bytes, **metadata: object) -> object:
        fields: dict[str, object] = {"text": "Hello.", "language": "en", "profile_id": self.profile.id}
        fields.update(metadata)
        messages = [ingest_pb.CreateGenerationRequest(metadata=ingest_pb.GenerationMetadata(**fields))]  # type: ignore[arg-type]
        messages += [
            ingest_pb.CreateGenerationRequest(chunk=data[i : i + 65536]) for i in range(0, len(data), 65536)
        ]
        return self.harness.ingest.CreateGeneration(iter(messages), metadata=self.md)

    def update(self, profile: pb.Profile, paths: list[str]) -> object:
        return self.harness.stub.UpdateProfile(
            pb.UpdateProfileRequest(profile=profile, update_mask=field_mask_pb2.FieldMask(paths=paths)),
            metadata=self.md,
        )

    def audio(self, encoding: Any, rate: int) -> object:
        return self.harness.stub.GetSampleAudio(
            pb.GetSampleAudioRequest(
                id=self.sample.id, format=audio_pb2.AudioFormat(encoding=encoding, sample_rate_hertz=rate)
            ),
            metadata=self.md,
        )


def wav(seconds: float, rate: int = 24000) -> bytes:
    return encode_file(speechlike(seconds, rate=rate), rate, "wav")


def past() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromSeconds(1_000_000_000)
    return stamp


def _other_filter_token(world: World) -> Awaitable[object]:
    async def call() -> object:
        await new_profile(world.harness, world.tenant)
        first = await world.harness.stub.ListProfiles(pb.ListProfilesRequest(page_size=1), metadata=world.md)
        assert first.next_page_token
        return await world.harness.stub.ListProfiles(
            pb.ListProfilesRequest(page_size=1, page_token=first.next_page_token, language="en"),
            metadata=world.md,
        )

    return call()


Case = tuple[str, Callable[[World], object], grpc.StatusCode, str]
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES: list[Case] = [
    # AddSample
    ("sample: empty stream", lambda w: w.add_sample([]), INVALID, "stream was empty"),
    (
        "sample: chunk before metadata",
        lambda w: w.add_sample([pb.AddSampleRequest(chunk=b"RIFF")]),
        INVALID,
        "first message",
    ),
    (
        "sample: metadata twice",
        lambda w: w.add_sample(
            sample_requests(w.profile.id, wav(3))[:2] + sample_requests(w.profile.id, b"x")[:1]
        ),
        INVALID,
        "only be sent once",
    ),
    (
        "sample: no profile id",
        lambda w: w.add_sample(sample_requests("", wav(3))),
        INVALID,
        "profile_id is required",
    ),
    (
        "sample: unknown profile",
        lambda w: w.add_sample(sample_requests(MISSING_ID, wav(3))),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    (
        # Not an id at all: a bad request, where a well-formed id that names nothing is NOT_FOUND (above).
        "sample: malformed profile id",
        lambda w: w.add_sample(sample_requests("../etc", wav(3))),
        INVALID,
        "metadata.profile_id '../etc' is not a profile id",
    ),
    ("sample: no bytes", lambda w: w.upload(b""), INVALID, "empty"),
    ("sample: garbage bytes", lambda w: w.upload(bytes(range(256)) * 400), INVALID, "could not be decoded"),
    (
        "sample: video without audio",
        lambda w: w.upload(encode_file(speechlike(3.0), 24000, "mp4_video_only")),
        INVALID,
        "no audio track",
    ),
    ("sample: too short", lambda w: w.upload(wav(1.5)), INVALID, "at least 2 s"),
    ("sample: too long", lambda w: w.upload(wav(301, rate=8000)), INVALID, "longer than the limit of 300"),
    (
        "sample: too large",
        lambda w: w.upload(b"\0" * (50 * 1024 * 1024 + 1), chunk=1024 * 1024),
        INVALID,
        "larger than the 50.0 MB",
    ),
    (
        "sample: silence",
        lambda w: w.upload(encode_file(np.zeros(24000 * 3, np.float32), 24000, "wav")),
        INVALID,
        "silent",
    ),
    (
        "sample: WAV holding a tenth of its declared data",
        lambda w: w.upload(with_wav_data_size(wav(3), wav_data_size(wav(3)) * 10)),
        INVALID,
        "the WAV file is cut short: its header declares 1440000 bytes of audio (30.00 s) but the file holds 144000",
    ),
    (
        "sample: truncated mp4",
        lambda w: w.upload(encode_file(speechlike(4.0), 24000, "m4a")[:3000]),
        INVALID,
        "could not be decoded",
    ),
    (
        "sample: reference text too long",
        lambda w: w.upload(wav(3), reference_text="a" * 2001),
        INVALID,
        "limit is 2000",
    ),
    (
        "sample: file name with newline",
        lambda w: w.upload(wav(3), file_name="a\nb.wav"),
        INVALID,
        "control characters",
    ),
    # CreateProfile
    (
        "profile: empty name",
        lambda w: w.harness.stub.CreateProfile(pb.CreateProfileRequest(name="  "), metadata=w.md),
        INVALID,
        "name must not be empty",
    ),
    (
        "profile: name too long",
        lambda w: w.harness.stub.CreateProfile(pb.CreateProfileRequest(name="n" * 101), metadata=w.md),
        INVALID,
        "limit is 100",
    ),
    (
        "profile: unknown language",
        lambda w: w.harness.stub.CreateProfile(
            pb.CreateProfileRequest(name="x", language="xx"), metadata=w.md
        ),
        INVALID,
        "zh, en, ja",
    ),
    (
        "profile: negative ttl",
        lambda w: w.harness.stub.CreateProfile(
            pb.CreateProfileRequest(name="x", temporary=True, ttl=duration_pb2.Duration(seconds=-5)),
            metadata=w.md,
        ),
        INVALID,
        "ttl must be positive",
    ),
    (
        "profile: ttl over 30 days",
        lambda w: w.harness.stub.CreateProfile(
            pb.CreateProfileRequest(name="x", temporary=True, ttl=duration_pb2.Duration(seconds=31 * 86400)),
            metadata=w.md,
        ),
        INVALID,
        "at most 30 days",
    ),
    (
        "profile: ttl without temporary",
        lambda w: w.harness.stub.CreateProfile(
            pb.CreateProfileRequest(name="x", ttl=duration_pb2.Duration(seconds=60)), metadata=w.md
        ),
        INVALID,
        "set temporary=true",
    ),
    (
        "profile: description too long",
        lambda w: w.harness.stub.CreateProfile(
            pb.CreateProfileRequest(name="x", description="d" * 2001), metadata=w.md
        ),
        INVALID,
        "limit is 2000",
    ),
    # UpdateProfile
    (
        "update: unknown mask path",
        lambda w: w.update(pb.Profile(id=w.profile.id), ["id"]),
        INVALID,
        "cannot be updated: id",
    ),
    (
        "update: empty mask",
        lambda w: w.update(pb.Profile(id=w.profile.id, name="z"), []),
        INVALID,
        "at least one field",
    ),
    (
        "update: expiry in the past",
        lambda w: w.update(pb.Profile(id=w.profile.id, expire_time=past()), ["expire_time"]),
        INVALID,
        "in the future",
    ),
    (
        "update: blank name",
        lambda w: w.update(pb.Profile(id=w.profile.id, name=""), ["name"]),
        INVALID,
        "name must not be empty",
    ),
    (
        "update: missing profile",
        lambda w: w.update(pb.Profile(id=MISSING_ID, name="z"), ["name"]),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    # Listing
    (
        "list: page too large",
        lambda w: w.harness.stub.ListProfiles(pb.ListProfilesRequest(page_size=101), metadata=w.md),
        INVALID,
        "at most 100",
    ),
    (
        "list: negative page size",
        lambda w: w.harness.stub.ListProfiles(pb.ListProfilesRequest(page_size=-1), metadata=w.md),
        INVALID,
        "negative",
    ),
    (
        "list: forged page token",
        lambda w: w.harness.stub.ListProfiles(
            pb.ListProfilesRequest(page_token="not-a-token"), metadata=w.md
        ),
        INVALID,
        "not a token this server issued",
    ),
    ("list: token for other filters", _other_filter_token, INVALID, "different filters"),
    (
        "list generations: reversed time range",
        lambda w: w.harness.stub.ListGenerations(
            pb.ListGenerationsRequest(
                create_time_start=timestamp_pb2.Timestamp(seconds=2_000_000_000), create_time_end=past()
            ),
            metadata=w.md,
        ),
        INVALID,
        "before create_time_end",
    ),
    # Audio out
    ("audio: rate below 8 kHz", lambda w: w.audio(audio_pb2.AUDIO_ENCODING_WAV, 7000), INVALID, "8000"),
    (
        "audio: opus at 44.1 kHz",
        lambda w: w.audio(audio_pb2.AUDIO_ENCODING_OGG_OPUS, 44100),
        INVALID,
        "48000",
    ),
    ("audio: unknown encoding", lambda w: w.audio(99, 24000), INVALID, "not a known AudioEncoding"),
    # CreateGeneration
    (
        "generation: empty text",
        lambda w: w.generation(wav(1), text=" "),
        INVALID,
        "metadata.text must not be empty",
    ),
    (
        "generation: LINEAR16 without rate",
        lambda w: w.generation(
            b"\0\0" * 24000, format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16)
        ),
        INVALID,
        "needs its sample rate",
    ),
    (
        "generation: duration mismatch",
        lambda w: w.generation(wav(2), duration_seconds=3.0),
        INVALID,
        "may be truncated",
    ),
    (
        "generation: unknown profile",
        lambda w: w.generation(wav(1), profile_id=MISSING_ID),
        grpc.StatusCode.NOT_FOUND,
        "not found",
    ),
    (
        "generation: NaN parameter",
        lambda w: w.generation(wav(1), parameters={"temperature": math.nan}),
        INVALID,
        "finite",
    ),
    (
        "generation: bad language",
        lambda w: w.generation(wav(1), language="klingon"),
        INVALID,
        "not supported",
    ),
    ("generation: garbage audio", lambda w: w.generation(b"garbage" * 100), INVALID, "could not be decoded"),
    (
        "generation: preview ttl negative",
        lambda w: w.generation(wav(1), preview=True, ttl=duration_pb2.Duration(seconds=-1)),
        INVALID,
        "metadata.ttl must be positive",
    ),
    (
        "generation: ttl without preview",
        lambda w: w.generation(wav(1), ttl=duration_pb2.Duration(seconds=60)),
        INVALID,
        "set preview=true",
    ),
    # Tenancy and archives
    (
        "tenant: header sent twice",
        lambda w: w.harness.stub.ListProfiles(
            pb.ListProfilesRequest(), metadata=(("x-voice-tenant", w.tenant), ("x-voice-tenant", "t-other"))
        ),
        INVALID,
        "sent 2 times",
    ),
    (
        "tenant: malformed tenant id",
        lambda w: w.harness.stub.ListProfiles(
            pb.ListProfilesRequest(), metadata=(("x-voice-tenant", "Bad Tenant!"),)
        ),
        INVALID,
        "is not a tenant id",
    ),
    (
        "import: not an archive",
        lambda w: w.harness.stub.ImportProfile(
            iter(
                [
                    pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata()),
                    pb.ImportProfileRequest(chunk=b"nope" * 300),
                ]
            ),
            metadata=w.md,
        ),
        INVALID,
        "not a profile export",
    ),
    (
        "import: one byte of archive",
        lambda w: w.harness.stub.ImportProfile(
            iter(
                [
                    pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata(name=w.profile.name)),
                    pb.ImportProfileRequest(chunk=b"x"),
                ]
            ),
            metadata=w.md,
        ),
        INVALID,
        "not a profile export",
    ),
]


@pytest.mark.parametrize(("name", "call", "code", "message"), CASES, ids=[case[0] for case in CASES])
async def test_bad_input_is_rejected_and_leaves_nothing(
    harness: Harness,
    tenant: str,
    name: str,
    call: Callable[[World], object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    profile = await new_profile(harness, tenant, language="en")
    sample = await add_sample(harness, tenant, profile.id, wav(2.5))
    world = World(harness, tenant, profile, sample)
    rows_before = await harness.rows(tenant)
    objects_before = await harness.objects(tenant)
    # A function, not a started call: an answer lost to the aio client's write race is asked for again.
    error = await expect_error(lambda: call(world), code)
    assert message in error.details(), error.details()
    rows_after = await harness.rows(tenant)
    if name == "list: token for other filters":
        rows_after["profiles"] -= 1  # the case itself made a second profile to get a token
    assert rows_after == rows_before
    assert await harness.objects(tenant) == objects_before


LONG_ID = "x" * 10_000
IdCall = Callable[[World, str], object]
ID_RPCS: list[tuple[str, str, IdCall]] = [
    ("GetProfile", "id", lambda w, i: w.harness.stub.GetProfile(pb.GetProfileRequest(id=i), metadata=w.md)),
    ("UpdateProfile", "profile.id", lambda w, i: w.update(pb.Profile(id=i, name="z"), ["name"])),
    (
        "DeleteProfile",
        "id",
        lambda w, i: w.harness.stub.DeleteProfile(pb.DeleteProfileRequest(id=i), metadata=w.md),
    ),
    ("AddSample", "metadata.profile_id", lambda w, i: w.add_sample(sample_requests(i, wav(3)))),
    (
        "ListSamples",
        "profile_id",
        lambda w, i: w.harness.stub.ListSamples(pb.ListSamplesRequest(profile_id=i), metadata=w.md),
    ),
    (
        "UpdateSample",
        "sample.id",
        lambda w, i: w.harness.stub.UpdateSample(
            pb.UpdateSampleRequest(
                sample=pb.Sample(id=i, reference_text="Hello."),
                update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
            ),
            metadata=w.md,
        ),
    ),
    (
        "DeleteSample",
        "id",
        lambda w, i: w.harness.stub.DeleteSample(pb.DeleteSampleRequest(id=i), metadata=w.md),
    ),
    (
        "GetSampleAudio",
        "id",
        lambda w, i: w.harness.stub.GetSampleAudio(pb.GetSampleAudioRequest(id=i), metadata=w.md),
    ),
    ("CreateGeneration", "metadata.profile_id", lambda w, i: w.generation(wav(1), profile_id=i)),
    (
        "GetGeneration",
        "id",
        lambda w, i: w.harness.stub.GetGeneration(pb.GetGenerationRequest(id=i), metadata=w.md),
    ),
    (
        "ListGenerations",
        "profile_id",
        lambda w, i: w.harness.stub.ListGenerations(pb.ListGenerationsRequest(profile_id=i), metadata=w.md),
    ),
    (
        "DeleteGeneration",
        "id",
        lambda w, i: w.harness.stub.DeleteGeneration(pb.DeleteGenerationRequest(id=i), metadata=w.md),
    ),
    (
        "GetGenerationStats",
        "profile_id",
        lambda w, i: w.harness.stub.GetGenerationStats(
            pb.GetGenerationStatsRequest(profile_id=i), metadata=w.md
        ),
    ),
    (
        "GetGenerationAudio",
        "id",
        lambda w, i: w.harness.stub.GetGenerationAudio(pb.GetGenerationAudioRequest(id=i), metadata=w.md),
    ),
    (
        "GetDownloadUrl of a sample",
        "sample_id",
        lambda w, i: w.harness.stub.GetDownloadUrl(pb.GetDownloadUrlRequest(sample_id=i), metadata=w.md),
    ),
    (
        "GetDownloadUrl of a generation",
        "generation_id",
        lambda w, i: w.harness.stub.GetDownloadUrl(pb.GetDownloadUrlRequest(generation_id=i), metadata=w.md),
    ),
    (
        "ExportProfile",
        "id",
        lambda w, i: w.harness.stub.ExportProfile(pb.ExportProfileRequest(id=i), metadata=w.md),
    ),
]


@pytest.mark.parametrize("bad_id", ["../etc", LONG_ID], ids=["path", "10k-characters"])
@pytest.mark.parametrize(("rpc", "field", "call"), ID_RPCS, ids=[case[0] for case in ID_RPCS])
async def test_a_value_that_is_not_an_id_is_invalid_in_every_rpc_with_a_short_answer(
    harness: Harness, tenant: str, rpc: str, field: str, call: IdCall, bad_id: str
) -> None:
    world = World(harness, tenant, pb.Profile(), pb.Sample())
    error = await expect_error(lambda: call(world, bad_id), INVALID)
    details = error.details() or ""
    assert " is not a " in details and field in details, details
    assert len(details) < 300, details
    assert field in field_violations(error)
    # The echo is bounded, so the answer stays far inside the client's metadata limit (8-16 KiB).
    assert trailing_metadata_bytes(error) < 2000


async def test_generation_rpcs_agree_on_a_malformed_id(harness: Harness, tenant: str) -> None:
    md = tenant_metadata(tenant)
    by_id = await expect_error(
        harness.stub.GetGeneration(pb.GetGenerationRequest(id="nope"), metadata=md), INVALID
    )
    by_profile = await expect_error(
        harness.stub.GetGenerationStats(pb.GetGenerationStatsRequest(profile_id="nope"), metadata=md), INVALID
    )
    assert by_id.details() == "id 'nope' is not a generation id: ids are UUIDs, as the server returned them"
    assert by_profile.details() == (
        "profile_id 'nope' is not a profile id: ids are UUIDs, as the server returned them"
    )


UNKNOWN_ENCODING = audio_pb2.AudioFormat(encoding=99)  # type: ignore[arg-type]


async def test_an_unknown_encoding_is_listed_with_the_other_bad_fields(harness: Harness, tenant: str) -> None:
    md = tenant_metadata(tenant)
    audio = await expect_error(
        harness.stub.GetSampleAudio(
            pb.GetSampleAudioRequest(id="../etc", format=UNKNOWN_ENCODING), metadata=md
        ),
        INVALID,
    )
    assert list(field_violations(audio)) == ["format.encoding", "id"]
    profile = await new_profile(harness, tenant)
    world = World(harness, tenant, profile, pb.Sample())
    generation = await expect_error(
        lambda: world.generation(wav(1), text=" ", format=UNKNOWN_ENCODING), INVALID
    )
    assert list(field_violations(generation)) == ["metadata.format.encoding", "metadata.text"]
    assert (await harness.rows(tenant))["generations"] == 0
