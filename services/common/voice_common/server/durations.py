"""``google.protobuf.Duration`` to and from the seconds and ``timedelta`` the domain holds.

Every service's timings, load times, retry delays and link lifetimes go through these, so a negative value or a
rounding rule is decided once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import duration_pb2

from voice_common.errors import InvalidArgument

# google.protobuf.Duration's own range (about 10 000 years): a client's value outside it is not a duration, and
# timedelta cannot hold the far end of int64 seconds (OverflowError, an INTERNAL before this check).
MAX_DURATION_SECONDS = 315_576_000_000


def duration_from_seconds(seconds: float) -> duration_pb2.Duration:
    """``seconds`` as a Duration, to the nearest nanosecond; a negative value (a clock that stepped back while a
    timing was taken) is sent as zero, never as a negative duration."""
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return value


def seconds_of(value: duration_pb2.Duration) -> float:
    return value.ToNanoseconds() / 1e9


def optional_timedelta(message: Any, field: str) -> timedelta | None:
    """The Duration ``field`` of ``message`` as a timedelta (to the microsecond, rounded down), or None when the
    client left it unset: an unset lifetime means "the default", which zero must not be confused with."""
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    if abs(value.seconds) > MAX_DURATION_SECONDS or abs(value.nanos) > 999_999_999:
        raise InvalidArgument(
            f"{field} ({value.seconds} s, {value.nanos} ns) is not a valid Duration: seconds must be within "
            f"±{MAX_DURATION_SECONDS} and nanos within ±999999999",
            field=field,
        )
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
