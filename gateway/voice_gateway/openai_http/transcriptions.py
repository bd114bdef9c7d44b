"""OpenAI's ``/v1/audio/transcriptions`` and ``/v1/audio/translations`` in the platform's terms, without HTTP: the
form fields checked and read into a :class:`TranscriptionForm`, the model names this face answers to, the ASR's
``TranscribeResponse`` rendered in each ``response_format``, and the ``transcript.text.*`` stream events.

What OpenAI's fields become: ``prompt`` is Whisper's ``initial_prompt``; ``language`` the recognition hint;
translations are Whisper's translate task (any language into English, multilingual models only: the ASR refuses it
on an English-only model, and that refusal is answered as a 400 naming ``model``). ``temperature`` is where
Whisper's temperature schedule starts (0, the default: greedy first, raised by 0.2 where a segment decodes badly, as
OpenAI documents for 0); a stream's live passes always decode greedily.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice_client import transcript_formats
from voice_gateway.openai_http.openai_errors import OpenAIHTTPError

Task = Literal["transcribe", "translate"]

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
# A stream sends the text as it is decoded: the formats whose whole body is that text.
STREAMABLE_FORMATS = ("json", "text")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "text/plain; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
# Whisper's prompt is at most 224 tokens (it keeps the last ones); text far beyond that only costs transfer.
MAX_PROMPT_CHARS = 4000
# Field names in the ASR's refusals, and the form field of this API that each comes from.
_FORM_FIELD_OF = {
    "content": "file",
    "audio": "file",
    "config.format": "file",
    "language": "language",
    "initial_prompt": "prompt",
    "task": "model",
}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


class FormFields(Protocol):
    """A parsed form (Starlette's ``FormData``): every value a field was given, in order."""

    def getlist(self, key: str) -> list[Any]: ...


@dataclass(frozen=True)
class TranscriptionForm:
    """A transcription or translation request's fields, checked (the file is handled by the route)."""

    model: str
    task: Task
    language: str = ""
    prompt: str = ""
    temperature: float = 0.0
    response_format: str = "json"
    granularities: frozenset[str] = frozenset()
    stream: bool = False

    @property
    def word_timestamps(self) -> bool:
        return "word" in self.granularities

    @property
    def word_cues(self) -> bool:
        """srt and vtt with ``timestamp_granularities[]=word``: one cue per word (the CLI's ``--words``)."""
        return self.word_timestamps and self.response_format in ("srt", "vtt")


def read_form(fields: FormFields, task: Task) -> TranscriptionForm:
    """The request's fields, or a 400 naming the first bad one (OpenAI answers one ``param`` per error)."""
    model = _text(fields, "model")
    if not model:
        raise OpenAIHTTPError(400, "you must provide a model parameter", param="model")
    response_format = _text(fields, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise OpenAIHTTPError(
            400,
            f"response_format {response_format!r} is not supported: one of {', '.join(RESPONSE_FORMATS)}",
            param="response_format",
        )
    prompt = _text(fields, "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise OpenAIHTTPError(
            400,
            f"prompt is {len(prompt)} characters long, at most {MAX_PROMPT_CHARS} are taken",
            param="prompt",
        )
    language = "" if task == "translate" else _text(fields, "language")
    granularities: frozenset[str] = frozenset()
    stream = False
    if task == "transcribe":
        granularities = _granularities(fields, response_format)
        stream = _flag(fields, "stream")
        if stream and response_format not in STREAMABLE_FORMATS:
            raise OpenAIHTTPError(
                400,
                f"stream=true sends transcript.text events, so response_format must be json or text, not "
                f"{response_format}",
                param="stream",
            )
    return TranscriptionForm(
        model=model,
        task=task,
        language=language,
        prompt=prompt,
        temperature=_temperature(fields),
        response_format=response_format,
        granularities=granularities,
        stream=stream,
    )


def _text(fields: FormFields, name: str) -> str:
    values = fields.getlist(name)
    if not values:
        return ""
    if not isinstance(values[-1], str):
        raise OpenAIHTTPError(400, f"{name} must be a form field, not a file", param=name)
    return values[-1].strip()


def _flag(fields: FormFields, name: str) -> bool:
    value = _text(fields, name).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OpenAIHTTPError(400, f"{name} must be true or false, not {value!r}", param=name)


def _temperature(fields: FormFields) -> float:
    text = _text(fields, "temperature")
    if not text:
        return 0.0
    try:
        temperature = float(text)
    except ValueError:
        raise OpenAIHTTPError(
            400, f"temperature must be a number, not {text!r}", param="temperature"
        ) from None
    if not 0.0 <= temperature <= 1.0:
        raise OpenAIHTTPError(400, f"temperature must be between 0 and 1, not {text}", param="temperature")
    return temperature


def _granularities(fields: FormFields, response_format: str) -> frozenset[str]:
    given = [
        value.strip() if isinstance(value, str) else value
        for name in ("timestamp_granularities[]", "timestamp_granularities")
        for value in fields.getlist(name)
    ]
    for value in given:
        if value not in GRANULARITIES:
            raise OpenAIHTTPError(
                400,
                f"timestamp_granularities[] takes word and segment, not {value!r}",
                param="timestamp_granularities",
            )
    if given and response_format not in ("verbose_json", "srt", "vtt"):
        raise OpenAIHTTPError(
            400,
            "timestamp_granularities[] needs response_format verbose_json (or srt / vtt, where word makes one cue "
            f"per word), not {response_format}",
            param="timestamp_granularities",
        )
    return frozenset(given)


def with_form_param(error: OpenAIHTTPError) -> OpenAIHTTPError:
    """An ASR refusal with ``param`` renamed from the gRPC field (``options.language``, ``content``) to the form
    field the caller sent (``language``, ``file``); translation on an English-only model names ``model``."""
    if error.param is None:
        return error
    field = (
        error.param.rsplit(".", 1)[-1]
        if error.param.startswith(("options.", "config.options."))
        else error.param
    )
    error.param = _FORM_FIELD_OF.get(field, error.param)
    return error


def text_body(text: str) -> str:
    return text + "\n"


def rendered(response: asr_pb.TranscribeResponse, form: TranscriptionForm) -> str | dict[str, Any]:
    """The body in ``form.response_format``: a JSON object (json, verbose_json) or text (text, srt, vtt)."""
    text = response.text.strip()
    if form.response_format == "json":
        return {"text": text, "usage": _usage(response.duration_seconds)}
    if form.response_format == "verbose_json":
        return verbose(response, form)
    if form.response_format == "text":
        return text_body(text)
    cues = transcript_formats.cues(response.segments, words=form.word_cues)
    return transcript_formats.srt(cues) if form.response_format == "srt" else transcript_formats.vtt(cues)


def verbose(response: asr_pb.TranscribeResponse, form: TranscriptionForm) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: segments unless only ``word`` was asked for, and words when it was. Whisper
    reports no token ids here, so ``tokens`` is empty; ``compression_ratio`` is computed from the segment's text as
    Whisper does; ``temperature`` is the request's, where the schedule started (a segment decoded again after a
    bad first decode used a higher one, which the ASR does not report)."""
    body: dict[str, Any] = {
        "task": form.task,
        "language": response.language,
        "duration": response.duration_seconds,
        "text": response.text.strip(),
    }
    if form.granularities != {"word"}:
        body["segments"] = [
            _segment(number, segment, form) for number, segment in enumerate(response.segments)
        ]
    if form.word_timestamps:
        body["words"] = [
            {"word": word.text.strip(), "start": word.start_seconds, "end": word.end_seconds}
            for segment in response.segments
            for word in segment.words
        ]
    body["usage"] = _usage(response.duration_seconds)
    return body


def _segment(number: int, segment: asr_pb.Segment, form: TranscriptionForm) -> dict[str, Any]:
    return {
        "id": number,
        # Whisper's seek is in mel frames of 10 ms.
        "seek": round(segment.start_seconds * 100),
        "start": segment.start_seconds,
        "end": segment.end_seconds,
        "text": segment.text,
        "tokens": [],
        "temperature": form.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": segment.no_speech_probability,
    }


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: the text's size over its zlib-compressed size (above 2.4 it looks looped)."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _usage(duration_seconds: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(duration_seconds, 3)}


class TextDeltas:
    """The ``transcript.text.delta`` pieces of a stream, from committed (final) results: each piece after the first
    starts with the space between them, so that the deltas joined are exactly the ``transcript.text.done`` text."""

    def __init__(self) -> None:
        self._pieces: list[str] = []

    def delta(self, final_text: str) -> str | None:
        piece = final_text.strip()
        if not piece:
            return None
        delta = piece if not self._pieces else " " + piece
        self._pieces.append(delta)
        return delta

    @property
    def text(self) -> str:
        return "".join(self._pieces)


def delta_event(delta: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": delta}


def done_event(text: str) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": text}
