"""Opaque page tokens for keyset paging over (created_at, id), newest first.

A token carries the last item's position and a digest of the filters it was made for, so a client that changes
filters between pages gets a clear INVALID_ARGUMENT instead of a silently wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from voice_common.errors import InvalidArgument
from voice_profiles.domain.entities import Page

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be at most {MAX_PAGE_SIZE} (got {requested})", field="page_size"
        )
    return requested


def _digest(filters: object) -> str:
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:16]


def encode_token(cursor: Cursor, filters: object) -> str:
    payload = {"t": cursor.created_at.isoformat(), "i": cursor.id, "f": _digest(filters)}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str, filters: object) -> Cursor | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(datetime.fromisoformat(payload["t"]), str(payload["i"]))
        digest = payload["f"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument(
            "page_token is not a token this server issued; pass next_page_token unchanged", field="page_token"
        ) from error
    if digest != _digest(filters):
        raise InvalidArgument(
            "page_token was issued for different filters; repeat the same filters or start without a token",
            field="page_token",
        )
    return cursor


class _Positioned(Protocol):
    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=_Positioned)


def page_of(items: list[Item], limit: int, filters: object) -> Page[Item]:
    """Cut a query result fetched with ``limit + 1`` rows into a page and the token of the next one."""
    if len(items) <= limit:
        return Page(items, "")
    items = items[:limit]
    return Page(items, encode_token(Cursor(items[-1].created_at, items[-1].id), filters))
