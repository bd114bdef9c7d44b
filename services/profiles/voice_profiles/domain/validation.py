"""Checks shared by the profile, sample and generation logic."""

from __future__ import annotations

import unicodedata
from datetime import timedelta

from voice_common import resource_ids
from voice_common.errors import InvalidArgument, quoted
from voice_profiles.domain.entities import LANGUAGE_CHOICES


def check_id(kind: str, value: str, field: str = "id") -> str:
    """The platform's one id rule (:mod:`voice_common.resource_ids`): empty or not a UUID is INVALID_ARGUMENT in
    every RPC; a well-formed id that names nothing answers NOT_FOUND later, from the lookup."""
    return resource_ids.check_id(kind, value, field)


def check_language(value: str, field: str = "language") -> str:
    if value == "":
        return "auto"
    if value not in LANGUAGE_CHOICES:
        raise InvalidArgument(
            f"language {quoted(value)} is not supported; use one of {', '.join(LANGUAGE_CHOICES)}",
            field=field,
        )
    return value


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text)


def check_text(
    value: str, field: str, *, max_chars: int, required: bool = False, single_line: bool = False
) -> str:
    if required and not value.strip():
        raise InvalidArgument(f"{field} must not be empty", field=field)
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} is {len(value)} characters; the limit is {max_chars}", field=field)
    if _has_control_characters(value) or (single_line and ("\n" in value or "\t" in value)):
        raise InvalidArgument(f"{field} contains control characters", field=field)
    return value


def check_search(value: str, field: str) -> str:
    """A substring to search for: any text but NUL, which PostgreSQL's text cannot hold (the query failed, an
    INTERNAL; found by fuzzing) and which no stored name or text contains."""
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character, which no stored text holds", field=field)
    return value


def check_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise InvalidArgument("name must not be empty", field="name")
    return check_text(name, "name", max_chars=100, single_line=True)


def check_ttl(ttl: timedelta | None, default: timedelta, maximum: timedelta, field: str = "ttl") -> timedelta:
    if ttl is None:
        return default
    if ttl <= timedelta(0):
        raise InvalidArgument(f"{field} must be positive", field=field)
    if ttl > maximum:
        raise InvalidArgument(f"{field} must be at most {maximum} (got {ttl})", field=field)
    return ttl
