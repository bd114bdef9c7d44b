"""Retries against the real gateway: its rate limit (RESOURCE_EXHAUSTED with RetryInfo), its stream limit (a
stream retried before its first response), and UNAVAILABLE while the profile service is down, then back."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from client_platform import Platform
from e2e_support import stop  # on the path client_platform sets

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_client import ResourceExhausted, RetryEvent, RetryPolicy, Unavailable, VoiceClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin(platform: Platform) -> Iterator[VoiceClient]:
    with VoiceClient(platform.target, platform.admin_key, timeout=120) as opened:
        yield opened


def wait_for(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


def test_a_rate_limited_call_waits_as_retry_info_says_then_succeeds(
    admin: VoiceClient, platform: Platform
) -> None:
    # One call every 2 s, no burst: the second of two calls in a row is refused with the time to the next token.
    slow = admin.keys.create(
        f"slow {uuid.uuid4().hex[:6]}", ["profiles:read"], requests_per_second=0.5, burst=1
    )
    events: list[RetryEvent] = []
    with VoiceClient(platform.target, slow.secret, retry=RetryPolicy(on_retry=events.append)) as client:
        for _ in range(3):  # a loaded machine may take 2 s between two calls: then the next pair is refused
            list(client.profiles.list(page_size=1))
            if events:
                break

        refusal = events[0]
        assert isinstance(refusal.error, ResourceExhausted)
        assert refusal.error.retry_after is not None and 0 < refusal.error.retry_after <= 2
        assert refusal.error.retry_after <= refusal.delay <= refusal.error.retry_after * 1.1
        assert "rate" in refusal.error.message
        assert refusal.method.endswith("/ListProfiles")

        once = client.with_options(retry=RetryPolicy.none())
        with pytest.raises(ResourceExhausted) as refused:
            for _ in range(3):
                list(once.profiles.list(page_size=1))
        assert refused.value.retry_after is not None


def test_a_stream_over_the_keys_stream_limit_is_retried_until_a_slot_frees(
    admin: VoiceClient, platform: Platform
) -> None:
    one = admin.keys.create(f"one stream {uuid.uuid4().hex[:6]}", ["tts"], max_concurrent_streams=1)
    profile = admin.profiles.create(f"streams {uuid.uuid4().hex[:6]}", language="en")
    sample = admin.samples.upload(profile.id, admin_speech(admin), reference_text="x")
    assert sample.id
    events: list[RetryEvent] = []
    with VoiceClient(
        platform.target, one.secret, retry=RetryPolicy(on_retry=events.append, deadline=120)
    ) as client:
        # Minutes of audio (the tiny model runs to max_new_tokens): holds the key's one stream slot.
        holder = client.tts.stream("Hold the slot.", profile.id, max_new_tokens=4000, encoding="linear16")
        next(iter(holder))
        results: list[bytes] = []
        second = threading.Thread(
            target=lambda: results.append(
                client.tts.stream("Second.", profile.id, max_new_tokens=6).read_all()
            )
        )
        second.start()
        wait_for(lambda: bool(events), "the second stream was refused and a retry scheduled")
        holder.cancel()
        second.join(timeout=120)
        assert results and results[0].startswith(b"RIFF")
    assert isinstance(events[0].error, ResourceExhausted) and events[0].method.endswith("/SynthesizeStream")
    assert events[0].error.retry_after == 1.0


def admin_speech(client: VoiceClient) -> bytes:
    from voice_testing.speech import SENTENCES, speech_wav

    return speech_wav(SENTENCES[3], "awb")


def test_reads_are_retried_while_the_profile_service_is_down_and_creates_are_not(
    admin: VoiceClient, platform: Platform
) -> None:
    profile = admin.profiles.create(f"outage {uuid.uuid4().hex[:6]}")
    events: list[RetryEvent] = []
    patient = RetryPolicy(
        max_attempts=1000, initial_backoff=0.1, max_backoff=1.0, deadline=120, on_retry=events.append
    )
    results: list[pb.Profile] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            results.append(admin.with_options(retry=patient).profiles.get(profile.id))
        except BaseException as error:
            failures.append(error)

    assert stop(platform.profiles, signal.SIGTERM) == 0
    try:
        with pytest.raises(Unavailable) as refused:
            admin.with_options(retry=RetryPolicy(on_retry=events.append)).profiles.create("not twice")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE
        assert events == []  # a create without a request id may have happened: never retried

        reader = threading.Thread(target=read)
        reader.start()
        wait_for(lambda: len(events) >= 2, "two failed attempts of the read")
    finally:
        platform.restart_profiles()
    reader.join(timeout=120)
    assert not failures, failures
    assert results == [profile]
    assert all(isinstance(event.error, Unavailable) for event in events)
    assert [event.attempt for event in events] == list(range(1, len(events) + 1))
    platform.wait_until_serving()
