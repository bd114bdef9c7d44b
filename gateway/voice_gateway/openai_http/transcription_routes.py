"""``POST /v1/audio/transcriptions`` and ``POST /v1/audio/translations``: OpenAI's multipart requests served by the
platform's ASR with the caller's key (the fields' meaning: voice_gateway.openai_http.transcriptions).

- The body is read by Starlette's multipart parser, the file spooled to a temporary file (memory up to 1 MiB, then
  disk), and counted as it arrives: past ``max_upload_bytes`` (plus room for the other fields) the request is
  answered 413 at once, the spooled file closed (a temporary file has no name: nothing is left on disk).
- Without ``stream``, the file goes to ``AsrService.Transcribe`` in one message, so it must fit the gRPC message
  size (``VOICE_GRPC_MAX_MESSAGE_BYTES``, 8 MiB by default, less room for the options): a larger file is answered
  413 before anything is sent, saying that ``stream=true`` takes it (WAV, FLAC, Ogg, MP3, AAC) up to the upload limit.
- ``stream=true`` feeds the file in pieces to ``AsrService.StreamingTranscribe`` (WAV, FLAC, Ogg, MP3 and AAC in
  ADTS frames: the containers it decodes as they arrive), without interim results: each final result (text the recognizer will
  not change, one per utterance) is a ``transcript.text.delta`` as soon as it is decoded, and
  ``transcript.text.done`` carries the whole text. Other containers (M4A, WebM...) go through ``Transcribe`` and
  their stream holds a single delta with the whole text. Refusals (key, model, bad audio, a full server) arrive
  before the response starts and are HTTP errors; a failure later ends the stream with an ``error`` event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice_client import AsyncVoiceClient
from voice_client.async_client import AsyncLiveTranscription
from voice_client.errors import VoiceError
from voice_gateway.openai_http.context import OpenAIContext
from voice_gateway.openai_http.model_catalogue import ASR, require_model
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError, from_voice_error
from voice_gateway.openai_http.transcriptions import (
    MEDIA_TYPES,
    Task,
    TextDeltas,
    TranscriptionForm,
    delta_event,
    done_event,
    read_form,
    rendered,
    with_form_param,
)

log = logging.getLogger("voice_gateway.openai_http")

# Room for the form's other fields, part headers and boundaries on top of the file.
FORM_OVERHEAD_BYTES = 64 * 1024
# Pieces of the upload sent to the live stream (the client's own upload chunk size).
STREAM_CHUNK_BYTES = 64 * 1024
# Room in a Transcribe message for everything but the audio (the options: a prompt of at most 4000 characters).
TRANSCRIBE_OPTIONS_BYTES = 64 * 1024


def stream_encoding(head: bytes) -> str | None:
    """The live stream's encoding for a file that starts with ``head``, or None for containers it cannot decode
    as they arrive (M4A/MP4, WebM, ...). Ogg is Ogg whatever its codec (Opus or Vorbis): the decoder reads it."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg_opus"
    # MPEG audio frames: MP3 has a layer, AAC's ADTS frames the same sync bits and layer 0.
    if head[:3] == b"ID3" or (
        len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06
    ):
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "aac"
    return None


async def read_upload_form(request: Request, max_upload_bytes: int) -> FormData:
    """The multipart form, refused with 413 as soon as the body passes the limit (before it is all read)."""
    limit = max_upload_bytes + FORM_OVERHEAD_BYTES
    too_large = OpenAIHTTPError(
        413,
        f"the uploaded file is over {max_upload_bytes} bytes, the most this server takes",
        param="file",
        code="payload_too_large",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise OpenAIHTTPError(
            400, "the request must be multipart/form-data with the audio in 'file'", param="file"
        )

    async def counted() -> AsyncGenerator[bytes, None]:
        received = 0
        async for piece in request.stream():
            received += len(piece)
            if received > limit:
                raise too_large
            yield piece

    parser = MultiPartParser(request.headers, counted(), max_files=1, max_fields=32)
    try:
        return await parser.parse()
    except MultiPartException as error:
        raise OpenAIHTTPError(400, f"the multipart body could not be read: {error.message}") from None


def _upload(form_data: FormData, max_upload_bytes: int) -> UploadFile:
    found = form_data.getlist("file")
    if not found or not isinstance(found[-1], UploadFile):
        raise OpenAIHTTPError(
            400, "the audio file is missing: send it in the multipart field 'file'", param="file"
        )
    upload = found[-1]
    # The body's count let the other fields' room through; the file itself is held to the limit.
    if upload.size is not None and upload.size > max_upload_bytes:
        raise OpenAIHTTPError(
            413,
            f"the uploaded file is over {max_upload_bytes} bytes, the most this server takes",
            param="file",
            code="payload_too_large",
        )
    return upload


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def check_inline_size(upload: UploadFile, max_message_bytes: int) -> None:
    """413 for a file that cannot go to Transcribe in one message (read nothing, send nothing)."""
    most = max_message_bytes - TRANSCRIBE_OPTIONS_BYTES
    if upload.size is not None and upload.size > most:
        raise OpenAIHTTPError(
            413,
            f"the file is {upload.size} bytes; a transcription without stream=true carries at most {most} bytes "
            "(the gRPC message limit, VOICE_GRPC_MAX_MESSAGE_BYTES): compress it, or send it with stream=true "
            "(WAV, FLAC, Ogg, MP3 or ADTS AAC), which takes files up to the upload limit",
            param="file",
            code="payload_too_large",
        )


async def _transcribe(client: AsyncVoiceClient, upload: UploadFile, form: TranscriptionForm) -> Any:
    content = await upload.read()
    return await client.asr.transcribe(
        content,
        language=form.language,
        translate=form.task == "translate",
        word_timestamps=form.word_timestamps,
        initial_prompt=form.prompt,
        temperature=form.temperature,
    )


async def _pieces(upload: UploadFile) -> AsyncIterator[bytes]:
    while piece := await upload.read(STREAM_CHUNK_BYTES):
        yield piece


async def _live_events(
    live: AsyncLiveTranscription, first: asr_pb.StreamingResult | None, form_data: FormData
) -> AsyncIterator[bytes]:
    deltas = TextDeltas()
    try:
        if first is not None:
            if (delta := deltas.delta(first.text)) is not None:
                yield _sse(delta_event(delta))
            async for result in live.finals():
                if (delta := deltas.delta(result.text)) is not None:
                    yield _sse(delta_event(delta))
        yield _sse(done_event(deltas.text))
    except VoiceError as error:
        # The status line has gone: the stream ends with the error in OpenAI's shape.
        log.warning("a transcription stream failed after its start", extra={"code": error.code.name})
        yield _sse(with_form_param(from_voice_error(error)).body())
    finally:
        live.cancel()
        await form_data.close()


async def _single_delta(text: str) -> AsyncIterator[bytes]:
    deltas = TextDeltas()
    if (delta := deltas.delta(text)) is not None:
        yield _sse(delta_event(delta))
    yield _sse(done_event(deltas.text))


def _event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _stream(
    client: AsyncVoiceClient,
    upload: UploadFile,
    form: TranscriptionForm,
    form_data: FormData,
    max_message_bytes: int,
) -> StreamingResponse:
    """The stream's response; the live stream's events close the form at their end."""
    encoding = stream_encoding(await upload.read(12))
    await upload.seek(0)
    if encoding is None:
        check_inline_size(upload, max_message_bytes)
        response = await _transcribe(client, upload, form)
        await form_data.close()
        return _event_stream(_single_delta(response.text))
    live = await client.asr.live(
        _pieces(upload),
        encoding=encoding,
        sample_rate_hertz=0,
        interim_results=False,
        language=form.language,
        initial_prompt=form.prompt,
    )
    # Opening the call waited for its first response, so refusals came as errors before any status was sent.
    first = None
    async for result in live:
        first = result
        break
    return _event_stream(_live_events(live, first, form_data))


def routes(context: OpenAIContext) -> list[BaseRoute]:
    async def serve(request: Request, task: Task) -> Response:
        client = context.caller(request)
        form_data = await read_upload_form(request, context.max_upload_bytes)
        handed_to_stream = False
        try:
            form = read_form(form_data, task)
            upload = _upload(form_data, context.max_upload_bytes)
            await require_model(client, form.model, ASR)
            try:
                if form.stream:
                    events = await _stream(client, upload, form, form_data, context.max_message_bytes)
                    handed_to_stream = True  # its end closes the form
                    return events
                check_inline_size(upload, context.max_message_bytes)
                response = await _transcribe(client, upload, form)
            except VoiceError as error:
                raise with_form_param(from_voice_error(error)) from None
        finally:
            if not handed_to_stream:
                await form_data.close()
        body = rendered(response, form)
        if isinstance(body, dict):
            return JSONResponse(body)
        return Response(body, media_type=MEDIA_TYPES[form.response_format])

    async def create_transcription(request: Request) -> Response:
        return await serve(request, "transcribe")

    async def create_translation(request: Request) -> Response:
        return await serve(request, "translate")

    return [
        Route("/v1/audio/transcriptions", create_transcription, methods=["POST"]),
        Route("/v1/audio/translations", create_translation, methods=["POST"]),
    ]
