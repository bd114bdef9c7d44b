"""A transcript as subtitles: SubRip and WebVTT, one cue per segment or per word, and timed word lines. Shared by
the ``voice`` CLI (``voice transcribe --format srt``) and the gateway's OpenAI-compatible HTTP face
(``response_format=srt``), which must not import the CLI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from voice.asr.v1 import asr_service_pb2 as asr_pb

# What ``voice transcribe --format`` offers (json: the API's message as it is).
FORMATS = ("text", "json", "srt", "vtt")


@dataclass(frozen=True)
class Cue:
    start_seconds: float
    end_seconds: float
    text: str


def cues(segments: Iterable[asr_pb.Segment | asr_pb.StreamingResult], *, words: bool) -> list[Cue]:
    """Segments (or live finals) as cues; with ``words``, one cue per timed word where the server sent them."""
    found: list[Cue] = []
    for segment in segments:
        if words and segment.words:
            found += [Cue(w.start_seconds, w.end_seconds, w.text.strip()) for w in segment.words]
        elif segment.text.strip():
            found.append(Cue(segment.start_seconds, segment.end_seconds, segment.text.strip()))
    return found


def clock(seconds: float, decimal_mark: str) -> str:
    """``HH:MM:SS,mmm`` (SubRip) or ``HH:MM:SS.mmm`` (WebVTT)."""
    milliseconds = max(0, round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal_mark}{fraction:03d}"


def srt(found: Sequence[Cue]) -> str:
    blocks = [
        f"{number}\n{clock(cue.start_seconds, ',')} --> {clock(cue.end_seconds, ',')}\n{cue.text}\n"
        for number, cue in enumerate(found, start=1)
    ]
    return "\n".join(blocks)


def vtt(found: Sequence[Cue]) -> str:
    blocks = [
        f"{clock(cue.start_seconds, '.')} --> {clock(cue.end_seconds, '.')}\n{cue.text}\n" for cue in found
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def word_lines(found: Sequence[Cue]) -> str:
    """Timed words as text (``voice transcribe --words``): one ``start-end  word`` line per word."""
    return "\n".join(f"{cue.start_seconds:7.2f}-{cue.end_seconds:<7.2f} {cue.text}" for cue in found)
