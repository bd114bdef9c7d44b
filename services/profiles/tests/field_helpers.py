"""Small request helpers shared by the profile-service tests."""

from __future__ import annotations

import uuid
from typing import Any

from profiles_harness import Harness, sample_requests, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb


async def new_profile(harness: Harness, tenant: str, name: str | None = None, **fields: Any) -> pb.Profile:
    request = pb.CreateProfileRequest(name=name or f"voice-{uuid.uuid4().hex[:8]}", **fields)
    return (await harness.stub.CreateProfile(request, metadata=tenant_metadata(tenant))).profile


async def add_sample(
    harness: Harness,
    tenant: str,
    profile_id: str,
    data: bytes,
    *,
    text: str | None = "A reference sentence.",
    file_name: str = "sample.wav",
    mime_type: str = "audio/wav",
) -> pb.Sample:
    requests = sample_requests(
        profile_id, data, reference_text=text, file_name=file_name, mime_type=mime_type
    )
    response = await harness.stub.AddSample(iter(requests), metadata=tenant_metadata(tenant))
    return response.sample
