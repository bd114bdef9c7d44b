"""How results look: tables with aligned columns, durations ("3.2 s", "1 min 04 s"), sizes and dates for people;
the API's messages as JSON (its own field names) for scripts with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from google.protobuf.json_format import MessageToDict, MessageToJson
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from voice_client import DownloadedAudio

NOTHING = "-"


def print_json(result: Message | Mapping[str, Any]) -> None:
    """The API's JSON: a message as ``MessageToJson`` writes it, or a dict of (converted) messages."""
    if isinstance(result, Message):
        print(MessageToJson(result, indent=2))
    else:
        print(json.dumps(result, indent=2))


def as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message)


def seconds(value: float) -> str:
    """``0.8 s``, ``3.2 s``, ``1 min 04 s``, ``2 h 05 min``."""
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def count(number: int, noun: str) -> str:
    """``1 sample``, ``3 samples``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def size(byte_count: int) -> str:
    """``812 B``, ``12.3 kB``, ``4.5 MB`` (powers of 1000, as tqdm's bars count)."""
    amount = float(byte_count)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{byte_count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def when(stamp: Timestamp) -> str:
    """A timestamp to the minute in UTC (``2026-11-30 23:45``), ``-`` when the field is unset."""
    if not stamp.seconds and not stamp.nanos:
        return NOTHING
    return stamp.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M")


def enum_name(full_name: str, prefix: str) -> str:
    """``TRANSCRIPT_STATE_MACHINE`` -> ``machine``."""
    return full_name.removeprefix(prefix).lower().replace("_", " ")


def clipped(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, empty: str) -> None:
    """Columns padded to their widest cell, two spaces apart; ``empty`` is printed instead when there are no rows."""
    if not rows:
        print(empty)
        return
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    """One ``name: value`` line per pair, the values aligned."""
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{(name + ':').ljust(width + 1)} {value}")


def downloaded(output: object, audio: DownloadedAudio, *, as_json: bool) -> None:
    """What a download wrote: a line for people, or the path, size, type and duration as JSON."""
    if as_json:
        print_json(
            {
                "path": str(output),
                "bytes": audio.size_bytes,
                "mimeType": audio.mime_type,
                "durationSeconds": audio.duration_seconds,
            }
        )
    else:
        print(f"{output}: {audio.mime_type}, {seconds(audio.duration_seconds)}, {size(audio.size_bytes)}")
