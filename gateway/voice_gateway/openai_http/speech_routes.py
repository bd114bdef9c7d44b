"""``POST /v1/audio/speech``: OpenAI's speech request (the official client's ``speech_create_params``) served by
the platform's ``TtsService.SynthesizeStream`` with the caller's key.

- ``voice``: a voice profile of the caller's tenant, by name or id, or ``{"id": ...}``; OpenAI's built-in voice
  names are not profiles here (404 unless a profile bears the name). ``GET /v1/audio/voices`` lists them.
- ``model``: a served TTS model or an alias (model_catalogue). ``response_format``: mp3 (default), opus (Ogg),
  aac (ADTS), flac, wav, pcm (raw 16-bit little-endian mono at 24 kHz, as OpenAI documents).
- ``speed`` 0.25 to 4.0. ``instructions``: refused (400): the platform's TTS clones a voice and takes no style
  instructions.
- ``stream_format``: ``audio`` (default) sends the file's bytes as the TTS makes them (chunked transfer); ``sse``
  sends ``speech.audio.delta`` events (base64 audio) and a closing ``speech.audio.done`` (or an ``error`` event
  when the synthesis fails after its start). Either way the response starts only once the synthesis has started:
  a refusal (bad voice, rate limit, a full queue) is an HTTP error with its status, not a broken stream.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute, Route

from voice.audio.v1 import audio_pb2
from voice_client import AsyncVoiceClient
from voice_client.async_client import AsyncSynthesisStream
from voice_client.errors import NotFound, VoiceError
from voice_client.messages import is_resource_id
from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.model_catalogue import TTS, require_model
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError, from_voice_error

log = logging.getLogger("voice_gateway.openai_http")

# OpenAI's pcm: raw samples at 24 kHz. The other formats carry their rate in their headers (the TTS's own, 24 kHz).
PCM_SAMPLE_RATE = 24_000
MIN_SPEED, MAX_SPEED = 0.25, 4.0


@dataclass(frozen=True)
class OutputFormat:
    encoding: audio_pb2.AudioEncoding
    content_type: str
    sample_rate_hertz: int = 0  # 0: the TTS's own


FORMATS: dict[str, OutputFormat] = {
    "mp3": OutputFormat(audio_pb2.AUDIO_ENCODING_MP3, "audio/mpeg"),
    "opus": OutputFormat(audio_pb2.AUDIO_ENCODING_OGG_OPUS, "audio/ogg"),
    "aac": OutputFormat(audio_pb2.AUDIO_ENCODING_AAC, "audio/aac"),
    "flac": OutputFormat(audio_pb2.AUDIO_ENCODING_FLAC, "audio/flac"),
    "wav": OutputFormat(audio_pb2.AUDIO_ENCODING_WAV, "audio/wav"),
    "pcm": OutputFormat(audio_pb2.AUDIO_ENCODING_LINEAR16, "audio/pcm", PCM_SAMPLE_RATE),
}
STREAM_FORMATS = ("audio", "sse")


@dataclass(frozen=True)
class SpeechRequest:
    input: str
    model: str
    voice: str
    response_format: str
    speed: float
    stream_format: str


def parse_speech_request(body: Any) -> SpeechRequest:
    """The request's fields, checked; 400 naming the first bad one."""
    if not isinstance(body, dict):
        raise OpenAIHTTPError(400, "the request body must be a JSON object")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise OpenAIHTTPError(400, "'input' must be a non-empty string", param="input")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIHTTPError(400, "you must provide a model parameter", param="model")
    voice = body.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise OpenAIHTTPError(
            400, "'voice' must be a voice profile's name or id, or {\"id\": <profile id>}", param="voice"
        )
    response_format = body.get("response_format", "mp3")
    if response_format not in FORMATS:
        raise OpenAIHTTPError(
            400,
            f"'response_format' must be one of {', '.join(FORMATS)}, not {response_format!r}",
            param="response_format",
        )
    speed = body.get("speed", 1.0)
    if (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not math.isfinite(speed)
        or not MIN_SPEED <= speed <= MAX_SPEED
    ):
        raise OpenAIHTTPError(
            400, f"'speed' must be a number from {MIN_SPEED} to {MAX_SPEED}, not {speed!r}", param="speed"
        )
    instructions = body.get("instructions")
    if instructions not in (None, ""):
        raise OpenAIHTTPError(
            400,
            "voice instructions are not supported by this model: the voice comes from the profile's samples "
            "(leave 'instructions' out)",
            param="instructions",
            code="unsupported_parameter",
        )
    stream_format = body.get("stream_format", "audio")
    if stream_format not in STREAM_FORMATS:
        raise OpenAIHTTPError(
            400, f"'stream_format' must be 'audio' or 'sse', not {stream_format!r}", param="stream_format"
        )
    return SpeechRequest(text, model, voice, response_format, float(speed), stream_format)


def voice_not_found(voice: str) -> OpenAIHTTPError:
    kind = "with the id" if is_resource_id(voice) else "named"
    return OpenAIHTTPError(
        404,
        f"No voice {kind} {voice!r}: a voice is a voice profile of your tenant (GET /v1/audio/voices lists them).",
        param="voice",
        code="voice_not_found",
    )


async def resolve_voice(client: AsyncVoiceClient, voice: str) -> str:
    """The profile id for ``voice``: an id as it is (the TTS checks it, with the key's tenant: no lookup, so a key
    with only the ``tts`` scope can speak by id), a name looked up among the caller's profiles (``profiles:read``);
    404 ``voice_not_found`` for a name no profile bears."""
    if is_resource_id(voice):
        return voice
    try:
        return (await client.profiles.find(voice)).id
    except NotFound:
        raise voice_not_found(voice) from None


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, read up to ``limit`` bytes (413 beyond)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OpenAIHTTPError(413, f"the request body is over {limit} bytes", code="payload_too_large")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise OpenAIHTTPError(413, f"the request body is over {limit} bytes", code="payload_too_large")
    try:
        return json.loads(body)
    except ValueError:
        raise OpenAIHTTPError(400, "the request body is not valid JSON") from None


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def _audio(stream: AsyncSynthesisStream) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    except VoiceError as error:
        # The status line has gone: all that can be done is to end the body early (the client sees a cut read).
        log.warning("a speech stream failed after its start", extra={"code": error.code.name})
        raise
    finally:
        stream.cancel()  # a caller that went away stops the synthesis; after the end this does nothing


async def _events(stream: AsyncSynthesisStream, text: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in _audio(stream):
            yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
    except VoiceError as error:
        # Events can still say what went wrong after the start: an error event ends the stream, no done event.
        yield _sse({"type": "error", "error": from_voice_error(error).body()["error"]})
        return
    # OpenAI counts tokens; the platform's nearest measures are characters in and audio frames out (12.5 a second).
    frames = round(stream.summary.duration_seconds * 12.5) if stream.summary is not None else 0
    usage = {"input_tokens": len(text), "output_tokens": frames, "total_tokens": len(text) + frames}
    yield _sse({"type": "speech.audio.done", "usage": usage})


def routes(context: OpenAIContext) -> list[BaseRoute]:
    async def create_speech(request: Request) -> StreamingResponse:
        speech = parse_speech_request(await read_json(request, context.max_json_bytes))
        client = context.caller(request)
        await require_model(client, speech.model, TTS)
        profile_id = await resolve_voice(client, speech.voice)
        output = FORMATS[speech.response_format]
        # Opening the stream waits for the first response: refusals arrive here, before any HTTP status is sent.
        try:
            stream = await client.tts.stream(
                speech.input,
                profile_id,
                encoding=output.encoding,
                sample_rate_hertz=output.sample_rate_hertz,
                speed=speech.speed,
            )
        except NotFound:
            raise voice_not_found(speech.voice) from None  # the profile: the one thing a synthesis looks up
        if speech.stream_format == "sse":
            return StreamingResponse(
                _events(stream, speech.input),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return StreamingResponse(_audio(stream), media_type=output.content_type)

    return [Route("/v1/audio/speech", create_speech, methods=["POST"])]
