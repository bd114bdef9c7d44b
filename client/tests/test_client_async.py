"""AsyncVoiceClient against the real platform (conftest.py): the same API awaited, with async iterators for lists
and streams, async iterables as request streams, and the same errors and retries."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from client_platform import Platform

from voice.audio.v1 import audio_pb2
from voice_client import (
    AsyncVoiceClient,
    InvalidArgument,
    NotFound,
    Progress,
    ResourceExhausted,
    RetryEvent,
    RetryPolicy,
    Unauthenticated,
)
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, wer

pytestmark = pytest.mark.slow


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


async def test_profiles_and_samples(platform: Platform, speech: bytes) -> None:
    async with AsyncVoiceClient(platform.target, platform.admin_key, timeout=120) as client:
        prefix = unique("async")
        made = [await client.profiles.create(f"{prefix} {index}", language="en") for index in range(3)]
        listed = [profile.id async for profile in client.profiles.list(name_contains=prefix, page_size=2)]
        assert sorted(listed) == sorted(profile.id for profile in made)
        assert (await client.profiles.resolve(made[0].name)).id == made[0].id

        async def body() -> AsyncIterator[bytes]:  # a request body arriving in pieces, say
            for start in range(0, len(speech), 10_000):
                await asyncio.sleep(0)
                yield speech[start : start + 10_000]

        seen: list[Progress] = []
        streamed = await client.samples.upload(
            made[0].id, body(), file_name="body.wav", reference_text=SENTENCES[0], progress=seen.append
        )
        assert seen[-1].done_bytes == len(speech) and streamed.file_name == "body.wav"
        from_file = await client.samples.upload(made[0].id, io.BytesIO(speech), chunk_bytes=8192)
        assert {s.id async for s in client.samples.list(made[0].id)} == {streamed.id, from_file.id}
        assert (await client.samples.download(streamed.id, original=True)).data == speech

        await client.profiles.delete(made[0].id)
        with pytest.raises(NotFound):
            await client.profiles.get(made[0].id)
        with pytest.raises(InvalidArgument) as invalid:
            await client.samples.list("not-an-id").__anext__()
        assert invalid.value.violations_by_field.keys() == {"profile_id"}


async def test_streamed_and_duplex_synthesis_and_live_transcription(
    platform: Platform, speech: bytes, live_pcm: bytes
) -> None:
    async with AsyncVoiceClient(platform.target, platform.admin_key, timeout=120) as client:
        profile = await client.profiles.create(unique("async voice"), language="en")
        await client.samples.upload(profile.id, speech, reference_text=SENTENCES[0])

        stream = await client.tts.stream("Hello there.", profile.id, encoding="linear16", max_new_tokens=24)
        chunks = [chunk async for chunk in stream]
        assert len(chunks) >= 2 and stream.summary is not None
        assert stream.format is not None and stream.format.encoding == audio_pb2.AUDIO_ENCODING_LINEAR16

        async def tokens() -> AsyncIterator[str]:  # an LLM's output, say
            for piece in ["Hello ", "from ", "pieces. ", "Goodbye."]:
                await asyncio.sleep(0.01)
                yield piece

        duplex = await client.tts.duplex(tokens(), profile.name, max_new_tokens=8)
        audio = await duplex.read_all()
        assert audio.startswith(b"RIFF") and duplex.summary is not None

        async with await client.tts.stream("Long.", profile.id, max_new_tokens=4000) as long:
            async for _ in long:
                break  # leaving the block cancels the synthesis

        async def audio_pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(live_pcm), 3200):
                yield live_pcm[start : start + 3200]

        live = await client.asr.live(audio_pieces(), sample_rate_hertz=16000)
        results = [result async for result in live]
        assert sum(result.is_final for result in results) >= 2  # fed at once: interim results may not come
        assert live.summary is not None
        assert wer(f"{SENTENCES[1]} {SENTENCES[2]}", live.summary.text) <= SENTENCE_WER_BAR

        transcript = await client.asr.transcribe(speech, word_timestamps=True)
        assert wer(SENTENCES[0], transcript.text) <= SENTENCE_WER_BAR
        assert (await client.asr.model_status()).model


async def test_errors_and_a_rate_limited_retry(platform: Platform) -> None:
    async with AsyncVoiceClient(platform.target, "vk_notakey0_" + "x" * 43) as stranger:
        with pytest.raises(Unauthenticated) as unknown:
            await stranger.tts.model_status()
        assert unknown.value.code == grpc.StatusCode.UNAUTHENTICATED
        # One channel, each caller's own key: a view per caller (the OpenAI-compatible HTTP face's way).
        assert (await stranger.with_options(api_key=platform.admin_key).tts.model_status()).model
        with pytest.raises(Unauthenticated):
            await stranger.tts.model_status()  # the view changed nothing of the client's own key

    async with AsyncVoiceClient(platform.target, platform.admin_key) as admin:
        slow = await admin.keys.create(unique("async slow"), ["asr"], requests_per_second=0.5, burst=1)
    events: list[RetryEvent] = []
    async with AsyncVoiceClient(
        platform.target, slow.secret, retry=RetryPolicy(on_retry=events.append)
    ) as client:
        for _ in range(3):
            await client.asr.model_status()
            if events:
                break
        assert isinstance(events[0].error, ResourceExhausted)
        assert events[0].error.retry_after is not None and events[0].delay >= events[0].error.retry_after
        with pytest.raises(ResourceExhausted):
            once = client.with_options(retry=RetryPolicy.none())
            for _ in range(3):
                await once.asr.model_status()


async def test_uploads_are_retried_only_when_their_bytes_can_be_sent_again(
    platform: Platform, speech: bytes
) -> None:
    scopes = ["profiles:read", "profiles:write"]
    async with AsyncVoiceClient(platform.target, platform.admin_key) as admin:
        profile = await admin.profiles.create(unique("rate limited uploads"), language="en")
        # A token every 5 s: an upload (slower than a read on a loaded machine) right after another is refused.
        slow = await admin.keys.create(unique("slow uploads"), scopes, requests_per_second=0.2, burst=1)
        # A token every 20 s: the second call is refused whatever the machine's pace.
        slower = await admin.keys.create(unique("slower uploads"), scopes, requests_per_second=0.05, burst=1)
    events: list[RetryEvent] = []
    uploaded = []
    async with AsyncVoiceClient(
        platform.target, slow.secret, retry=RetryPolicy(on_retry=events.append)
    ) as client:
        for _ in range(3):  # a file object can be sought back: refused, waited for, sent again
            uploaded.append(await client.samples.upload(profile.id, io.BytesIO(speech), reference_text="x"))
            if events:
                break
        assert isinstance(events[0].error, ResourceExhausted) and events[0].method.endswith("/AddSample")

    async def body() -> AsyncIterator[bytes]:
        yield speech

    events.clear()
    async with AsyncVoiceClient(
        platform.target, slower.secret, retry=RetryPolicy(on_retry=events.append)
    ) as client:
        uploaded.append(await client.samples.upload(profile.id, speech, reference_text="x"))
        with pytest.raises(
            ResourceExhausted
        ) as refused:  # an async iterable is sent once: the refusal stands
            await client.samples.upload(profile.id, body(), reference_text="x")
        assert refused.value.retry_after is not None and events == []
    async with AsyncVoiceClient(platform.target, platform.admin_key) as admin:  # nothing was added twice
        assert {s.id async for s in admin.samples.list(profile.id)} == {s.id for s in uploaded}
