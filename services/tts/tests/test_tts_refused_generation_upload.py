"""A generation upload the profile service refuses while the audio is still being sent gets the refusal, every time.

The profile service checks the profile as soon as the upload's metadata arrives, so storing megabytes of speech for a
profile that is gone ends the call while the TTS service is still writing chunks. grpc.aio then sometimes replaces
the NOT_FOUND with INTERNAL "Internal error from Core" (voice_client.stream_call_status); the client must still get
NOT_FOUND, not an INTERNAL. The race is rare per call, so the test repeats the upload; against this service (whose
refusal waits for a database lookup) it was not seen in some 1,800 unfixed uploads, so the test that fails without the
fix is client/tests/test_stream_call_status.py, and this one checks store_generation's path end to end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from grpc import aio

from voice_common.config import CommonSettings
from voice_common.errors import NotFound
from voice_common.server.bootstrap import build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.settings import ProfilesSettings
from voice_tts.profile_client import SAMPLE_RATE, ProfileClient

UPLOADS = 100
# 60 s of 16-bit speech at 24 kHz: about 2.9 MB, some 44 chunks, so the refusal comes while most are unsent.
AUDIO_SECONDS = 60


@pytest.fixture(scope="module")
async def channel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[aio.Channel]:
    """A channel to a real profile service (SQLite + filesystem) on loopback."""
    data_dir: Path = tmp_path_factory.mktemp("profiles")
    common = CommonSettings(data_dir=data_dir, log_format="text")
    app = await ProfilesApp.open(common, ProfilesSettings(port=0, metrics_port=0), migrate=True)
    server = build_server(
        settings=common, services=app.registrations(), host="127.0.0.1", port=0, readiness=app.readiness
    )
    await server.start()
    for _ in range(200):
        if server.serving:
            break
        await asyncio.sleep(0.05)
    assert server.serving, server.last_readiness_error
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield channel
    await channel.close(None)
    await server.stop(0)
    await app.close()


async def test_a_generation_for_a_missing_profile_is_not_found_every_time(channel: aio.Channel) -> None:
    client = ProfileClient(channel, timeout_seconds=30.0)
    tenant = f"t-{uuid.uuid4().hex[:12]}"
    pcm = (np.random.default_rng(0).standard_normal(AUDIO_SECONDS * SAMPLE_RATE) * 0.1).astype(np.float32)
    outcomes: dict[str, int] = {}
    for _ in range(UPLOADS):
        missing = str(uuid.uuid4())
        try:
            await client.store_generation(
                tenant,
                profile_id=missing,
                text="Gone before its speech arrived.",
                language="en",
                seed=1,
                parameters={},
                model_id="m",
                pcm=pcm,
                preview=False,
            )
        except NotFound as error:
            assert error.resource_id == missing
            outcomes["NotFound"] = outcomes.get("NotFound", 0) + 1
        except Exception as error:  # counted, so the failure shows every other outcome at once
            key = f"{type(error).__name__}: {error}"
            outcomes[key] = outcomes.get(key, 0) + 1
        else:
            outcomes["stored"] = outcomes.get("stored", 0) + 1
    assert outcomes == {"NotFound": UPLOADS}
