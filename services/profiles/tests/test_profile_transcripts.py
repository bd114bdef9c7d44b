"""Automatic transcripts end to end: a real profile server whose filler calls a real ASR server (tiny.en, CPU), which
reads the sample's audio back through the profile server; real speech (flite's, recorded in tests/speech)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from field_helpers import add_sample, new_profile
from google.protobuf import field_mask_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from profiles_harness import FakeClock, Harness, tenant_metadata

from voice.profiles.v1 import generation_ingest_service_pb2_grpc as ingest_pb_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_asr.app import AsrApp
from voice_asr.settings import AsrSettings
from voice_common.config import CommonSettings
from voice_common.server.bootstrap import VoiceServer, build_server
from voice_profiles.app import ProfilesApp
from voice_profiles.asr_client import AsrTranscriber
from voice_profiles.domain.transcripts import TranscriptFiller, TranscriptPolicy
from voice_profiles.settings import ProfilesSettings
from voice_testing.media_files import encode_file
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, speech_wav, wer

TEXT = SENTENCES[0]
TENANT = "t-transcripts"


@pytest.fixture(scope="module")
def speech() -> bytes:
    """A WAV of TEXT in flite's slt voice."""
    return speech_wav(TEXT, "slt")


# Not silent to the profile service's level check (which refuses silence), but no speech to the recogniser (a
# steady tone; speech-like noise makes Whisper hear "Mm-hmm").
_SECONDS = np.arange(3 * 24000) / 24000
NOISE = encode_file((0.3 * np.sin(2 * np.pi * 440 * _SECONDS)).astype(np.float32), 24000, "wav")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def asr_server(profiles_address: str, port: int = 0) -> AsyncIterator[str]:
    settings = AsrSettings(
        port=port, metrics_port=0, profiles_address=profiles_address, device="cpu", cpu_threads=2
    )
    common = CommonSettings(log_format="text")
    app = AsrApp.open(common, settings)
    server = build_server(settings=common, services=[app.registration()], host="127.0.0.1", port=port)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)
        await app.close()


async def eventually(check: Callable[[], Awaitable[bool]], within_seconds: float) -> bool:
    deadline = time.monotonic() + within_seconds
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


@dataclass
class Platform:
    harness: Harness
    settings: ProfilesSettings
    profiles_address: str
    clock: FakeClock

    @property
    def app(self) -> ProfilesApp:
        return self.harness.app

    async def samples(self, profile_id: str) -> dict[str, pb.Sample]:
        response = await self.harness.stub.ListSamples(
            pb.ListSamplesRequest(profile_id=profile_id), metadata=tenant_metadata(TENANT)
        )
        return {s.id: s for s in response.samples}

    async def attempts(self, sample_id: str) -> int:
        async with self.app.database.transaction() as tx:
            return (await tx.samples.transcript_attempts(TENANT, sample_id))[0]

    async def wait_for(
        self, profile_id: str, sample_id: str, state: int, within_seconds: float = 30.0
    ) -> pb.Sample:
        deadline = time.monotonic() + within_seconds
        while True:
            sample = (await self.samples(profile_id))[sample_id]
            if sample.transcript_state == state or time.monotonic() > deadline:
                return sample
            await asyncio.sleep(0.05)

    async def health(self) -> int:
        stub: Any = health_pb2_grpc.HealthStub(self.harness.channel)
        return int((await stub.Check(health_pb2.HealthCheckRequest(service=""))).status)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    """A fresh profile server (SQLite) of its own, so one test's waiting samples never reach another's filler."""
    common = CommonSettings(data_dir=tmp_path, log_format="text")
    settings = ProfilesSettings(port=0, metrics_port=0, transcribe_interval_seconds=0.2)
    clock = FakeClock()
    app = await ProfilesApp.open(common, settings, migrate=True, clock=clock)
    server: VoiceServer = build_server(
        settings=common,
        services=app.registrations(),
        host="127.0.0.1",
        port=0,
        readiness=app.readiness,
        readiness_recheck_seconds=0.1,
    )
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    harness = Harness(
        app,
        server,
        channel,
        pb_grpc.ProfileServiceStub(channel),
        ingest_pb_grpc.GenerationIngestServiceStub(channel),
        app.store,
    )
    try:
        yield Platform(harness, settings, f"127.0.0.1:{server.port}", clock)
    finally:
        await harness.close()
        await app.close()


async def test_sample_without_text_gets_a_machine_transcript_soon_after_it_is_added(
    platform: Platform, speech: bytes
) -> None:
    async with asr_server(platform.profiles_address) as asr_address:
        # A long interval: the transcript can only come this soon from the wake-up after AddSample.
        platform.app.start_background(
            platform.settings.model_copy(
                update={"asr_address": asr_address, "transcribe_interval_seconds": 3600}
            )
        )
        profile = await new_profile(platform.harness, TENANT)
        typed = await add_sample(platform.harness, TENANT, profile.id, speech, text="My own words.")
        started = time.monotonic()
        added = await add_sample(platform.harness, TENANT, profile.id, speech, text=None)
        assert added.transcript_state == pb.TRANSCRIPT_STATE_NEEDED  # AddSample does not wait for ASR
        filled = await platform.wait_for(profile.id, added.id, pb.TRANSCRIPT_STATE_MACHINE, within_seconds=20)
        assert filled.transcript_state == pb.TRANSCRIPT_STATE_MACHINE, filled
        # The recogniser's text reached this sample's row (accuracy is the ASR tests' business).
        assert wer(TEXT, filled.reference_text) <= SENTENCE_WER_BAR, filled.reference_text
        assert time.monotonic() - started < 20

        untouched = (await platform.samples(profile.id))[typed.id]
        assert (untouched.reference_text, untouched.transcript_state) == (
            "My own words.",
            pb.TRANSCRIPT_STATE_PROVIDED,
        )
        # The machine's text is editable like any other, and the user's edit makes it the user's.
        edited = (
            await platform.harness.stub.UpdateSample(
                pb.UpdateSampleRequest(
                    sample=pb.Sample(id=added.id, reference_text="The quick brown fox."),
                    update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
                ),
                metadata=tenant_metadata(TENANT),
            )
        ).sample
        assert edited.transcript_state == pb.TRANSCRIPT_STATE_PROVIDED


async def test_sample_with_no_speech_stays_needed_and_is_not_retried_at_once(platform: Platform) -> None:
    async with asr_server(platform.profiles_address) as asr_address:
        platform.app.start_background(platform.settings.model_copy(update={"asr_address": asr_address}))
        profile = await new_profile(platform.harness, TENANT)
        sample = await add_sample(platform.harness, TENANT, profile.id, NOISE, text=None)
        filler = platform.app.transcripts
        assert filler is not None

        async def attempted() -> bool:
            return await platform.attempts(sample.id) > 0

        assert await eventually(attempted, 20)
        # The round that made the attempt has ended (the recogniser answered), and three more ran after it.
        claimed_in = filler.rounds

        async def more_rounds() -> bool:
            return filler.rounds >= claimed_in + 4

        assert await eventually(more_rounds, 20)
        assert await platform.attempts(sample.id) == 1
        after = (await platform.samples(profile.id))[sample.id]
        assert (after.reference_text, after.transcript_state) == ("", pb.TRANSCRIPT_STATE_NEEDED)


async def test_no_speech_is_retried_after_the_back_off_and_then_given_up(platform: Platform) -> None:
    async with asr_server(platform.profiles_address) as asr_address:
        channel = aio.insecure_channel(asr_address)
        policy = TranscriptPolicy(max_attempts=2, retry_after=timedelta(minutes=5))
        filler = TranscriptFiller(
            platform.app.database, AsrTranscriber(channel), platform.app.limits, platform.clock, policy
        )
        profile = await new_profile(platform.harness, TENANT)
        sample = await add_sample(platform.harness, TENANT, profile.id, NOISE, text=None)
        try:
            assert (await filler.fill_now()).unheard == 1
            assert (await filler.fill_now()).unheard == 0  # within the back-off
            platform.clock.advance(timedelta(minutes=5, seconds=1))
            assert (await filler.fill_now()).unheard == 1
            platform.clock.advance(timedelta(days=365))
            assert (await filler.fill_now()).unheard == 0  # given up
        finally:
            await channel.close(None)
        assert await platform.attempts(sample.id) == 2
        after = (await platform.samples(profile.id))[sample.id]
        assert after.transcript_state == pb.TRANSCRIPT_STATE_NEEDED


class UserEditsMeanwhile:
    """The real ASR client, but the user types a text while the recogniser works (a race, made deterministic)."""

    def __init__(self, inner: AsrTranscriber, platform: Platform) -> None:
        self._inner = inner
        self._platform = platform

    async def transcribe_sample(self, tenant_id: str, sample_id: str) -> str:
        text = await self._inner.transcribe_sample(tenant_id, sample_id)
        await self._platform.harness.stub.UpdateSample(
            pb.UpdateSampleRequest(
                sample=pb.Sample(id=sample_id, reference_text="Typed while it listened."),
                update_mask=field_mask_pb2.FieldMask(paths=["reference_text"]),
            ),
            metadata=tenant_metadata(tenant_id),
        )
        return text


async def test_user_text_typed_while_the_recogniser_listens_wins(platform: Platform, speech: bytes) -> None:
    async with asr_server(platform.profiles_address) as asr_address:
        channel = aio.insecure_channel(asr_address)
        filler = TranscriptFiller(
            platform.app.database,
            UserEditsMeanwhile(AsrTranscriber(channel), platform),
            platform.app.limits,
            platform.clock,
        )
        profile = await new_profile(platform.harness, TENANT)
        sample = await add_sample(platform.harness, TENANT, profile.id, speech, text=None)
        try:
            report = await filler.fill_now()
        finally:
            await channel.close(None)
        assert (report.filled, report.skipped) == (0, 1)
        after = (await platform.samples(profile.id))[sample.id]
        assert (after.reference_text, after.transcript_state) == (
            "Typed while it listened.",
            pb.TRANSCRIPT_STATE_PROVIDED,
        )


async def test_asr_down_costs_nothing_and_the_sample_is_filled_when_it_returns(
    platform: Platform, speech: bytes
) -> None:
    port = free_port()  # nothing listens there yet
    platform.app.start_background(platform.settings.model_copy(update={"asr_address": f"127.0.0.1:{port}"}))
    profile = await new_profile(platform.harness, TENANT)
    sample = await add_sample(platform.harness, TENANT, profile.id, speech, text=None)
    await asyncio.sleep(1.0)  # several rounds against the closed port
    assert (await platform.samples(profile.id))[sample.id].transcript_state == pb.TRANSCRIPT_STATE_NEEDED
    assert await platform.attempts(sample.id) == 0
    assert await platform.health() == health_pb2.HealthCheckResponse.SERVING

    async with asr_server(platform.profiles_address, port=port):
        filled = await platform.wait_for(
            profile.id, sample.id, pb.TRANSCRIPT_STATE_MACHINE, within_seconds=25
        )
    assert filled.transcript_state == pb.TRANSCRIPT_STATE_MACHINE, filled
    assert wer(TEXT, filled.reference_text) <= SENTENCE_WER_BAR, filled.reference_text
