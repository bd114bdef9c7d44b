"""GetDownloadUrl: audio straight from the object store (presigned on S3, file:// in embedded mode)."""

from __future__ import annotations

import urllib.request
from datetime import UTC, timedelta

import grpc
from audio_collect import fetch_all
from field_helpers import add_sample, new_profile
from google.protobuf import duration_pb2
from profiles_harness import Harness, expect_error, tenant_metadata
from test_profile_generations import store_generation

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_testing.media_files import encode_file, speechlike


def download(url: str) -> bytes:
    # urllib reads both http:// (presigned S3) and file:// (embedded store) URLs.
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read()
        return data


async def test_sample_urls_download_the_stored_files(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    original = encode_file(speechlike(2.5, rate=44100), 44100, "mp3")
    sample = await add_sample(harness, tenant, profile.id, original, mime_type="audio/mpeg")
    md = tenant_metadata(tenant)
    link = await harness.stub.GetDownloadUrl(
        pb.GetDownloadUrlRequest(sample_id=sample.id, original=True), metadata=md
    )
    assert download(link.url) == original and link.mime_type == "audio/mpeg"
    normalized = await harness.stub.GetDownloadUrl(
        pb.GetDownloadUrlRequest(sample_id=sample.id, ttl=duration_pb2.Duration(seconds=60)), metadata=md
    )
    assert normalized.mime_type == "audio/wav"
    assert download(normalized.url) == await fetch_all(harness, tenant, sample.id)
    life = normalized.expire_time.ToDatetime(tzinfo=UTC) - link.expire_time.ToDatetime(tzinfo=UTC)
    assert abs(life - (timedelta(seconds=60) - timedelta(minutes=15))) < timedelta(seconds=5)


async def test_generation_url(harness: Harness, tenant: str) -> None:
    generation = await store_generation(harness, tenant, encode_file(speechlike(1.0), 24000, "wav"))
    link = await harness.stub.GetDownloadUrl(
        pb.GetDownloadUrlRequest(generation_id=generation.id), metadata=tenant_metadata(tenant)
    )
    assert download(link.url)[:4] == b"RIFF"


async def test_bad_url_requests(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    sample = await add_sample(harness, tenant, profile.id, encode_file(speechlike(2.5), 24000, "wav"))
    md = tenant_metadata(tenant)
    cases = [
        (pb.GetDownloadUrlRequest(), grpc.StatusCode.INVALID_ARGUMENT, "sample_id or generation_id"),
        (
            pb.GetDownloadUrlRequest(sample_id=sample.id, ttl=duration_pb2.Duration(seconds=8 * 86400)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at most 7 days",
        ),
        (
            pb.GetDownloadUrlRequest(
                sample_id=sample.id, ttl=duration_pb2.Duration(seconds=0, nanos=500_000_000)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at least 1 second",
        ),
        (
            pb.GetDownloadUrlRequest(generation_id=sample.id, original=True),
            grpc.StatusCode.INVALID_ARGUMENT,
            "samples only",
        ),
        (pb.GetDownloadUrlRequest(generation_id=sample.id), grpc.StatusCode.NOT_FOUND, "not found"),
    ]
    for request, code, message in cases:
        error = await expect_error(harness.stub.GetDownloadUrl(request, metadata=md), code)
        assert message in error.details()
    await expect_error(
        harness.stub.GetDownloadUrl(
            pb.GetDownloadUrlRequest(sample_id=sample.id), metadata=tenant_metadata(tenant + "-x")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
