"""The OpenAI transcription face without the ASR: form fields to the platform's request, the ASR's response in
every ``response_format``, the stream's deltas, and the refusals the HTTP app answers before any gRPC call (an
oversize body, a bad form) through the real Starlette app and multipart parser. The same endpoints against the
real gateway and ASR: tests/test_e2e_openai_transcriptions.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx2 as httpx  # the HTTP client the official openai package brings (dev extra)
import pytest
from starlette.datastructures import FormData

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice_client import AsyncVoiceClient
from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.http_app import build_app
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError
from voice_gateway.openai_http.transcription_routes import stream_encoding
from voice_gateway.openai_http.transcriptions import (
    TextDeltas,
    TranscriptionForm,
    compression_ratio,
    read_form,
    rendered,
    with_form_param,
)

RESPONSE = asr_pb.TranscribeResponse(
    text=" Hello there. General Kenobi.",
    language="en",
    duration_seconds=3.5,
    segments=[
        asr_pb.Segment(
            text=" Hello there.",
            start_seconds=0.0,
            end_seconds=1.25,
            avg_logprob=-0.2,
            no_speech_probability=0.01,
            words=[
                asr_pb.Word(text=" Hello", start_seconds=0.0, end_seconds=0.5, probability=0.9),
                asr_pb.Word(text=" there.", start_seconds=0.5, end_seconds=1.25, probability=0.8),
            ],
        ),
        asr_pb.Segment(
            text=" General Kenobi.",
            start_seconds=1.5,
            end_seconds=3.0,
            avg_logprob=-0.3,
            no_speech_probability=0.02,
            words=[
                asr_pb.Word(text=" General", start_seconds=1.5, end_seconds=2.0, probability=0.9),
                asr_pb.Word(text=" Kenobi.", start_seconds=2.0, end_seconds=3.0, probability=0.7),
            ],
        ),
    ],
)


def form(*pairs: tuple[str, str]) -> FormData:
    return FormData([("model", "whisper-1"), *pairs])


def refusal(fields: FormData, task: str = "transcribe") -> OpenAIHTTPError:
    with pytest.raises(OpenAIHTTPError) as raised:
        read_form(fields, task)  # type: ignore[arg-type]
    return raised.value


def test_defaults_are_openais() -> None:
    assert read_form(form(), "transcribe") == TranscriptionForm(model="whisper-1", task="transcribe")


def test_fields_map_to_the_request() -> None:
    read = read_form(
        form(
            ("language", "en"),
            ("prompt", "Kenobi"),
            ("temperature", "0.4"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
        ),
        "transcribe",
    )
    assert (read.language, read.prompt, read.temperature) == ("en", "Kenobi", 0.4)
    assert read.granularities == {"word", "segment"} and read.word_timestamps


@pytest.mark.parametrize(
    ("pairs", "param", "words"),
    [
        ((("response_format", "xml"),), "response_format", "xml"),
        ((("temperature", "2"),), "temperature", "between 0 and 1"),
        ((("temperature", "warm"),), "temperature", "a number"),
        ((("timestamp_granularities[]", "char"),), "timestamp_granularities", "'char'"),
        ((("timestamp_granularities[]", "word"),), "timestamp_granularities", "verbose_json"),
        ((("stream", "true"), ("response_format", "srt")), "stream", "json or text"),
        ((("stream", "maybe"),), "stream", "true or false"),
        ((("prompt", "x" * 5000),), "prompt", "5000 characters"),
    ],
)
def test_bad_fields_are_400_naming_the_field(
    pairs: tuple[tuple[str, str], ...], param: str, words: str
) -> None:
    error = refusal(form(*pairs))
    assert (error.status, error.param) == (400, param)
    assert words in error.message


def test_a_missing_model_is_400() -> None:
    error = refusal(FormData([("response_format", "json")]))
    assert (error.status, error.param) == (400, "model")


def test_translations_take_no_language_stream_or_granularities() -> None:
    # OpenAI's translation form has none of them: they are not read (the text is English whatever is sent).
    read = read_form(form(("language", "de"), ("stream", "true")), "translate")
    assert (read.task, read.language, read.stream, read.granularities) == (
        "translate",
        "",
        False,
        frozenset(),
    )


def test_asr_field_names_become_form_fields() -> None:
    assert with_form_param(OpenAIHTTPError(400, "x", param="options.language")).param == "language"
    assert with_form_param(OpenAIHTTPError(400, "x", param="options.task")).param == "model"
    assert with_form_param(OpenAIHTTPError(400, "x", param="content")).param == "file"
    assert with_form_param(OpenAIHTTPError(400, "x", param="config.options.initial_prompt")).param == "prompt"
    assert with_form_param(OpenAIHTTPError(503, "x")).param is None


def test_json_and_text() -> None:
    assert rendered(RESPONSE, TranscriptionForm("whisper-1", "transcribe")) == {
        "text": "Hello there. General Kenobi.",
        "usage": {"type": "duration", "seconds": 3.5},
    }
    text = TranscriptionForm("whisper-1", "transcribe", response_format="text")
    assert rendered(RESPONSE, text) == "Hello there. General Kenobi.\n"


def test_srt_and_vtt_one_cue_per_segment_or_word() -> None:
    srt = TranscriptionForm("whisper-1", "transcribe", response_format="srt")
    assert rendered(RESPONSE, srt) == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,000\nGeneral Kenobi.\n"
    )
    vtt = TranscriptionForm(
        "whisper-1", "transcribe", response_format="vtt", granularities=frozenset({"word"})
    )
    body = rendered(RESPONSE, vtt)
    assert isinstance(body, str) and body.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nHello\n")
    assert body.count(" --> ") == 4


def test_verbose_json_has_openais_fields() -> None:
    both = TranscriptionForm(
        "whisper-1",
        "transcribe",
        response_format="verbose_json",
        granularities=frozenset({"word", "segment"}),
    )
    body = rendered(RESPONSE, both)
    assert isinstance(body, dict)
    assert (body["task"], body["language"], body["duration"]) == ("transcribe", "en", 3.5)
    assert body["words"][1] == {"word": "there.", "start": 0.5, "end": 1.25}
    second = body["segments"][1]
    assert second["id"] == 1 and second["seek"] == 150 and second["text"] == " General Kenobi."
    assert second["avg_logprob"] == -0.3 and second["no_speech_prob"] == 0.02 and second["tokens"] == []
    assert second["compression_ratio"] == compression_ratio(" General Kenobi.")
    words_only = TranscriptionForm(
        "whisper-1", "transcribe", response_format="verbose_json", granularities=frozenset({"word"})
    )
    assert "segments" not in rendered(RESPONSE, words_only)
    plain = rendered(RESPONSE, TranscriptionForm("whisper-1", "translate", response_format="verbose_json"))
    assert isinstance(plain, dict) and "words" not in plain and plain["task"] == "translate"


def test_deltas_join_to_the_done_text() -> None:
    deltas = TextDeltas()
    got = [deltas.delta(text) for text in (" Hello there.", "  ", " General Kenobi. ")]
    assert got == ["Hello there.", None, " General Kenobi."]
    assert deltas.text == "Hello there. General Kenobi."


@pytest.mark.parametrize(
    ("head", "encoding"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg_opus"),
        (b"ID3\x04\x00", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),
        (b"\xff\xf1\x50\x80", "aac"),  # ADTS frames
        (b"\xff\xf9\x50\x80", "aac"),
        (b"\x00\x00\x00\x20ftypM4A ", None),
        (b"\x1a\x45\xdf\xa3", None),
    ],
)
def test_the_live_stream_takes_containers_it_decodes_as_they_arrive(
    head: bytes, encoding: str | None
) -> None:
    assert stream_encoding(head) == encoding


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The real app with a 1000-byte upload limit, its client pointed where nothing listens: every answer here is
    given before a gRPC call."""
    client = AsyncVoiceClient("127.0.0.1:1", api_key="vk_unused_000000000000000000000000")
    app = build_app(OpenAIContext(client=client, max_upload_bytes=1000))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        yield http
    await client.close()


KEY = {"authorization": "Bearer vk_test_0000000000000000000000000000"}


async def test_an_oversize_upload_is_413_before_the_body_is_read(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/v1/audio/transcriptions",
        headers=KEY,
        data={"model": "whisper-1"},
        files={"file": ("big.wav", b"\0" * 200_000, "audio/wav")},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert answer.json()["error"]["param"] == "file"


async def test_a_file_just_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    # Within the room the body is given for the other fields, but the file itself is over the limit.
    answer = await http.post(
        "/v1/audio/transcriptions",
        headers=KEY,
        data={"model": "whisper-1"},
        files={"file": ("big.wav", b"\0" * 1001, "audio/wav")},
    )
    assert answer.status_code == 413 and answer.json()["error"]["param"] == "file"


async def test_an_oversize_chunked_upload_is_413_while_it_is_read(http: httpx.AsyncClient) -> None:
    # No Content-Length: the body is counted as it arrives, and refused once it passes the limit.
    sent = []

    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(100):
            sent.append(1)
            yield b"\0" * 10_000

    answer = await http.post(
        "/v1/audio/transcriptions",
        headers={**KEY, "content-type": "multipart/form-data; boundary=b"},
        content=body(),
    )
    assert answer.status_code == 413
    assert len(sent) < 20  # refused after 74 KB of 1 MB, not after all of it


async def test_a_request_without_a_file_or_key_is_refused(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/audio/transcriptions", headers=KEY, files={"model": (None, "whisper-1")})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"
    answer = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": b"x"})
    assert answer.status_code == 401
    assert json.loads(answer.text)["error"]["type"] == "authentication_error"
    answer = await http.post("/v1/audio/translations", headers=KEY, json={"model": "whisper-1"})
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["error"]["message"]


async def test_a_file_over_the_grpc_message_limit_is_413_unless_streamed() -> None:
    """Transcribe carries the file in one message: a larger one is refused before any call, pointing to stream=true;
    a streamed WAV of the same size goes on to the live call (here: to an ASR that is not there, 503)."""
    client = AsyncVoiceClient("127.0.0.1:1", api_key="vk_unused_000000000000000000000000", timeout=2)
    app = build_app(OpenAIContext(client=client, max_upload_bytes=1_000_000, max_message_bytes=70 * 1024))
    wav_head = b"RIFF\x00\x00\x00\x00WAVEfmt "
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as http:
            for fields, head in (({}, wav_head), ({"stream": "true"}, b"\x00\x00\x00\x20ftypM4A ")):
                answer = await http.post(
                    "/v1/audio/transcriptions",
                    headers=KEY,
                    data={"model": "whisper-1", **fields},
                    files={"file": ("a.wav", head + b"\0" * 20_000, "audio/wav")},
                )
                assert answer.status_code == 413, answer.text
                assert "stream=true" in answer.json()["error"]["message"]
            answer = await http.post(
                "/v1/audio/transcriptions",
                headers=KEY,
                data={"model": "whisper-1", "stream": "true"},
                files={"file": ("a.wav", wav_head + b"\0" * 20_000, "audio/wav")},
            )
            assert answer.status_code == 503, answer.text
    finally:
        await client.close()
