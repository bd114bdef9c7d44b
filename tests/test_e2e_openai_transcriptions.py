"""OpenAI's transcription and translation endpoints through the official ``openai`` client, against the real
gateway's HTTP face in front of the real profile service (API keys) and ASR (Whisper tiny.en) processes: every
response_format, the stream's events, and the refusals (translation on an English-only model, a bad key, a key
without the asr scope, an unknown model, an oversize upload)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile
from e2e_support import (
    SERVING,
    create_key,
    free_port,
    service,
    service_env,
    start_gateway,
    with_internal_token,
)
from openai.types.audio import TranscriptionTextDoneEvent

from voice_testing.media_files import encode_file
from voice_testing.speech import SAMPLE_RATE, SENTENCE_WER_BAR, SENTENCES, silence, speak, wer

pytestmark = pytest.mark.slow

ASR_SERVICE = "voice.asr.v1.AsrService"
FIRST, SECOND = SENTENCES[0], SENTENCES[1]
# The gateway's HTTP upload limit here: far above the test speech, small enough to send past it quickly.
MAX_UPLOAD_BYTES = 1024 * 1024


@dataclass
class OpenAIFace:
    base_url: str
    key: str  # every scope
    profiles_only_key: str

    def client(self, key: str | None = None) -> openai.OpenAI:
        # No retries: a test of a refusal sees it once.
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIFace]:
    root = tmp_path_factory.mktemp("openai-asr")
    http_port = free_port()
    env = with_internal_token(
        service_env(
            root / "data",
            ASR_PRELOAD="true",
            ASR_CPU_THREADS="1",
            OMP_NUM_THREADS="1",
            GATEWAY_HTTP_PORT=str(http_port),
            GATEWAY_HTTP_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        )
    )
    log_dir = root / "logs"
    with contextlib.ExitStack() as stack:
        profiles = stack.enter_context(service(env, log_dir))
        asr = stack.enter_context(service(env, log_dir, module="voice_asr", prefix="ASR"))
        profiles.wait_for(SERVING, timeout=60)
        gateway = stack.enter_context(contextlib.closing(start_gateway(env, log_dir)))
        asr.wait_for(SERVING, timeout=120, service=ASR_SERVICE)
        gateway.wait_for(SERVING, timeout=30, service=ASR_SERVICE)
        yield OpenAIFace(
            f"http://127.0.0.1:{http_port}/v1",
            create_key(env, "openai-asr"),
            create_key(env, "openai-asr", "profiles:read"),
        )


def wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "fox.wav"
    path.write_bytes(wav(speak(FIRST, "slt")))
    return path


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sentences a second and a half apart: two utterances, so a stream has two final results."""
    path = tmp_path_factory.mktemp("speech") / "two.wav"
    path.write_bytes(
        wav(np.concatenate([speak(FIRST, "slt"), silence(1.5), speak(SECOND, "rms"), silence(1.0)]))
    )
    return path


def test_json_and_text(face: OpenAIFace, recording: Path) -> None:
    client = face.client()
    result = client.audio.transcriptions.create(
        file=recording, model="whisper-1", language="en", prompt="A fox.", temperature=0.2
    )
    assert wer(FIRST, result.text) <= SENTENCE_WER_BAR, result.text
    text = client.audio.transcriptions.create(
        file=recording, model="gpt-4o-mini-transcribe", response_format="text"
    )
    assert isinstance(text, str) and wer(FIRST, text) <= SENTENCE_WER_BAR, text


def test_srt_and_vtt(face: OpenAIFace, recording: Path) -> None:
    client = face.client()
    srt = client.audio.transcriptions.create(file=recording, model="whisper-1", response_format="srt")
    assert isinstance(srt, str) and srt.startswith("1\n00:00:0") and " --> " in srt
    said = " ".join(line for line in srt.splitlines() if line and "-->" not in line and not line.isdigit())
    assert wer(FIRST, said) <= SENTENCE_WER_BAR, srt
    vtt = client.audio.transcriptions.create(
        file=recording, model="whisper-1", response_format="vtt", timestamp_granularities=["word"]
    )
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT\n\n")
    # One cue per word.
    assert vtt.count(" --> ") >= len(FIRST.split()) - 2, vtt


def test_verbose_json_with_segments_and_words(face: OpenAIFace, recording: Path) -> None:
    result = face.client().audio.transcriptions.create(
        file=recording,
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.language == "en" and 3 < result.duration < 8
    assert wer(FIRST, result.text) <= SENTENCE_WER_BAR, result.text
    assert (
        result.segments and result.segments[0].start >= 0 and result.segments[-1].end <= result.duration + 0.1
    )
    assert result.words and len(result.words) >= len(FIRST.split()) - 2
    starts = [word.start for word in result.words]
    assert starts == sorted(starts) and all(word.end >= word.start for word in result.words)
    plain = face.client().audio.transcriptions.create(
        file=recording, model="whisper-1", response_format="verbose_json"
    )
    assert plain.segments and plain.words is None


def test_a_stream_sends_deltas_as_utterances_are_decoded(face: OpenAIFace, two_sentences: Path) -> None:
    events = list(
        face.client().audio.transcriptions.create(file=two_sentences, model="gpt-4o-transcribe", stream=True)
    )
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    deltas = [event.delta for event in events if event.type == "transcript.text.delta"]
    assert len(deltas) >= 2, kinds  # one per utterance at least: not the whole text in one piece
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert "".join(deltas) == done.text
    assert wer(f"{FIRST} {SECOND}", done.text) <= 2 * SENTENCE_WER_BAR, done.text


@pytest.mark.parametrize("kind", ["flac", "mp3", "ogg_opus", "ogg_vorbis", "aac"])
def test_every_container_the_live_stream_decodes_streams(face: OpenAIFace, kind: str) -> None:
    audio = encode_file(speak(FIRST, "slt"), SAMPLE_RATE, kind)
    events = list(
        face.client().audio.transcriptions.create(file=(f"fox.{kind}", audio), model="whisper-1", stream=True)
    )
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent) and wer(FIRST, done.text) <= SENTENCE_WER_BAR, done
    assert len(events) >= 2


def test_a_container_the_live_stream_cannot_decode_streams_one_delta(face: OpenAIFace) -> None:
    # M4A (MP4) needs its index, often at the end: it goes through Transcribe, and the stream has the whole text.
    m4a = encode_file(speak(FIRST, "slt"), SAMPLE_RATE, "m4a")
    events = list(
        face.client().audio.transcriptions.create(file=("fox.m4a", m4a), model="whisper-1", stream=True)
    )
    assert [event.type for event in events] == ["transcript.text.delta", "transcript.text.done"]
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent) and wer(FIRST, done.text) <= SENTENCE_WER_BAR, done


# openai marks translations.create deprecated (OpenAI's newer models translate through transcriptions); the endpoint
# is still served and still what Whisper's translate task answers.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_translation_needs_a_multilingual_model(face: OpenAIFace, recording: Path) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        face.client().audio.translations.create(file=recording, model="whisper-1")
    assert refused.value.status_code == 400
    body = refused.value.body
    assert isinstance(body, dict) and body["param"] == "model", body
    assert "multilingual" in body["message"]


def test_refusals_in_openais_shape(face: OpenAIFace, recording: Path) -> None:
    with pytest.raises(openai.AuthenticationError):
        face.client("vk_notakey_000000000000000000000000000000").audio.transcriptions.create(
            file=recording, model="whisper-1"
        )
    with pytest.raises(openai.PermissionDeniedError):
        face.client(face.profiles_only_key).audio.transcriptions.create(file=recording, model="whisper-1")
    with pytest.raises(openai.NotFoundError) as unknown:
        face.client().audio.transcriptions.create(file=recording, model="whisper-9000")
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        face.client().audio.transcriptions.create(file=recording, model="whisper-1", temperature=3)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as not_audio:
        face.client().audio.transcriptions.create(
            file=("notes.txt", b"not audio at all " * 50), model="whisper-1"
        )
    assert not_audio.value.param == "file"


def test_an_oversize_upload_is_413(face: OpenAIFace, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(wav(np.zeros(MAX_UPLOAD_BYTES, dtype=np.float32)))  # 2 MB of silence
    with pytest.raises(openai.APIStatusError) as refused:
        face.client().audio.transcriptions.create(file=big, model="whisper-1")
    assert refused.value.status_code == 413
    assert refused.value.code == "payload_too_large"
