"""The gateway's OpenAI-compatible HTTP face with the official ``openai`` client, against the real gateway in front
of the real profile, TTS (a tiny random-weight model: its audio is noise of the right length) and ASR processes,
started once for the module as client/tests/client_platform.py starts them: speech in every format decoded back,
a streamed speech whose first bytes come before the synthesis ends, models and voices, and the errors the client
turns into its exceptions (bad key, missing scope, unknown voice and model, a body too large, a rate limit), and
last a drain on SIGTERM that lets a running speech finish."""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client" / "tests"))

from client_platform import Platform, running_platform
from e2e_support import create_key

from voice_client import VoiceClient
from voice_common.audio import decode_audio
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow

# Several sentences: the TTS speaks them in pieces (about 2 s of audio each from the tiny model), so the stream
# runs long enough to tell its first bytes from its end.
LONG_TEXT = " ".join(SENTENCES[:3] * 2)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("openai-http")) as started:
        yield started


@pytest.fixture(scope="module")
def base_url(platform: Platform) -> str:
    return f"http://127.0.0.1:{platform.env['GATEWAY_HTTP_PORT']}/v1"


@pytest.fixture(scope="module")
def voice_id(platform: Platform) -> str:
    with VoiceClient(platform.target, platform.admin_key) as client:
        profile = client.profiles.create(f"OpenAI voice {uuid.uuid4().hex[:6]}", language="en")
        client.samples.upload(profile.id, speech_wav(SENTENCES[0], "slt"), reference_text=SENTENCES[0])
        return profile.id


def openai_client(base_url: str, key: str, **options: object) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=key, **options)  # type: ignore[arg-type]


def test_speech_in_every_format_decodes_back(platform: Platform, base_url: str, voice_id: str) -> None:
    client = openai_client(base_url, platform.admin_key)
    with VoiceClient(platform.target, platform.admin_key) as voice:
        name = voice.profiles.get(voice_id).name
    for response_format in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        speech = client.audio.speech.create(
            model="tts-1", voice=name, input="Hello there.", response_format=response_format
        )
        audio = speech.read()
        if response_format == "pcm":  # raw 16-bit little-endian mono at 24 kHz
            seconds = len(audio) / 2 / 24_000
        else:
            decoded = decode_audio(audio)
            seconds = len(decoded.samples) / decoded.sample_rate
        assert 1.0 < seconds < 4.0, (response_format, seconds)  # 24 frames at 12.5 a second
    # {"id": ...}, a speed, and the served model's own name work too.
    served = client.models.list().data
    model = next(entry.id for entry in served if entry.id not in ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"))
    faster = client.audio.speech.create(
        model="gpt-4o-mini-tts",
        voice={"id": voice_id},
        input="Hello there.",
        response_format="wav",
        speed=2.0,
    ).read()
    decoded = decode_audio(faster)
    assert len(decoded.samples) / decoded.sample_rate < 1.5
    assert model


def test_streamed_speech_arrives_before_the_synthesis_ends(
    platform: Platform, base_url: str, voice_id: str
) -> None:
    client = openai_client(base_url, platform.admin_key)
    started = time.monotonic()
    arrivals: list[float] = []
    audio = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice=voice_id, input=LONG_TEXT, response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        for chunk in response.iter_bytes():
            arrivals.append(time.monotonic() - started)
            audio += chunk
    seconds = len(audio) / 2 / 24_000
    assert seconds > 3.0
    first, last = arrivals[0], arrivals[-1]
    print(f"first bytes after {first:.2f} s, the end after {last:.2f} s, {seconds:.1f} s of audio")
    assert first < last / 2, (first, last)

    # Server-sent events: speech.audio.delta with base64 audio, then speech.audio.done.
    events = []
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST",
            f"{base_url}/audio/speech",
            headers={"authorization": f"Bearer {platform.admin_key}"},
            json={
                "model": "tts-1",
                "voice": voice_id,
                "input": "Hello.",
                "stream_format": "sse",
                "response_format": "pcm",
            },
        ) as streamed,
    ):
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        for line in streamed.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert [event["type"] for event in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] > 0
    pcm = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    assert len(pcm) > 24_000


def test_models_and_voices(platform: Platform, base_url: str, voice_id: str) -> None:
    client = openai_client(base_url, platform.admin_key)
    models = {model.id: model for model in client.models.list().data}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "whisper-1", "gpt-4o-transcribe"} <= models.keys()
    assert client.models.retrieve("whisper-1").owned_by == "voice-platform"
    voices = client.get("/audio/voices", cast_to=object)
    assert isinstance(voices, dict) and voice_id in [voice["id"] for voice in voices["data"]]
    # Another tenant's key sees none of this tenant's voices.
    stranger = openai_client(base_url, create_key(platform.env, "openai-other"))
    others = stranger.get("/audio/voices", cast_to=object)
    assert isinstance(others, dict) and others["data"] == []
    with pytest.raises(openai.NotFoundError) as unknown:
        stranger.audio.speech.create(model="tts-1", voice=voice_id, input="Hello.")
    assert unknown.value.body["code"] == "voice_not_found"  # type: ignore[index]


def test_errors_are_openai_errors(platform: Platform, base_url: str, voice_id: str) -> None:
    client = openai_client(base_url, platform.admin_key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        openai_client(base_url, "vk_notakey0_" + "x" * 43).models.list()
    with pytest.raises(openai.NotFoundError) as unknown_voice:
        client.audio.speech.create(model="tts-1", voice="Nobody by this name", input="Hello.")
    assert unknown_voice.value.body["param"] == "voice"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.audio.speech.create(model="whisper-1", voice=voice_id, input="Hello.")
    assert unknown_model.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as instructions:
        client.audio.speech.create(model="tts-1", voice=voice_id, input="Hello.", instructions="Cheerful.")
    assert "instructions" in instructions.value.message
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice=voice_id, input="Hello.", speed=5.0)
    with pytest.raises(openai.APIStatusError) as oversize:
        client.audio.speech.create(model="tts-1", voice=voice_id, input="x" * (1024 * 1024 + 1))
    assert oversize.value.status_code == 413

    with VoiceClient(platform.target, platform.admin_key) as admin:
        transcribe_only = admin.keys.create("openai asr only", ["asr"]).secret
        slow = admin.keys.create(
            "openai slow", ["tts", "profiles:read"], requests_per_second=0.05, burst=1
        ).secret
    with pytest.raises(openai.PermissionDeniedError) as denied:
        openai_client(base_url, transcribe_only).audio.speech.create(
            model="tts-1", voice=voice_id, input="Hi."
        )
    assert "tts" in denied.value.message
    # One call allowed (a voice by id needs no lookup), the next refused: 429 with when to come back.
    limited = openai_client(base_url, slow, max_retries=0)
    assert limited.audio.speech.create(model="tts-1", voice=voice_id, input="Hello.").read()
    with pytest.raises(openai.RateLimitError) as refused:
        limited.audio.speech.create(model="tts-1", voice=voice_id, input="Hello.")
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]


def test_a_drain_lets_a_running_speech_finish_and_refuses_new_ones(
    platform: Platform, base_url: str, voice_id: str
) -> None:
    """Last in the module: it stops the gateway."""
    client = openai_client(base_url, platform.admin_key, max_retries=0)
    audio = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice=voice_id, input=LONG_TEXT, response_format="pcm"
    ) as response:
        chunks = response.iter_bytes()
        audio += next(chunks)
        platform.gateway.signal(signal.SIGTERM)
        for chunk in chunks:
            audio += chunk
    assert len(audio) / 2 / 24_000 > 3.0  # all of it, as without the drain
    assert platform.gateway.wait(30) == 0
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
