"""Typed domain errors.

Domain code raises these; the server's error interceptor is the one place that maps them to gRPC status codes
(see ``voice_common.server.status_mapping``). Messages are written for the person who made the request: say what was wrong
and what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

# How much of a client's value a message quotes. Errors echo what was sent so the sender can find it, but a value
# of any length must not make the answer as long: gRPC sends the message and its details in trailing metadata,
# which a client refuses past its metadata limit (8-16 KiB), turning a precise INVALID_ARGUMENT into a
# RESOURCE_EXHAUSTED that names nothing.
QUOTED_CHARS = 64


def shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis and the full length when it was longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quoted(value: str, limit: int = QUOTED_CHARS) -> str:
    """A client's value in quotes for a message, bounded: ``'abc'``, or ``'abcd…' (10000 characters)``."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base class of every error a client is meant to see."""

    def __init__(self, message: str, *, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.violations = violations or []


class InvalidArgument(DomainError):
    """The request itself is wrong (bad field, undecodable audio, out-of-range value)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, violations=[FieldViolation(field, message)] if field else None)
        self.field = field


class NotFound(DomainError):
    """The named resource does not exist for this tenant (another tenant's ids look exactly like this)."""

    def __init__(self, kind: str, resource_id: str, *, message: str | None = None) -> None:
        """``message``: when the plain "<kind> '<id>' not found" would not tell the reader what to do."""
        super().__init__(message or f"{kind} {quoted(resource_id)} not found")
        self.kind = kind
        self.resource_id = resource_id


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state to do it."""


class Aborted(DomainError):
    """The request collided with another one still running (a LoadModel of another model); retry once it ended."""


class ResourceExhausted(DomainError):
    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(DomainError):
    """The call carries no credential, or one that is unknown, revoked or expired."""


class PermissionDenied(DomainError):
    """The credential is good but does not allow this call (an API key without the method's scope)."""


class Unavailable(DomainError):
    """A dependency (database, object store, model) cannot answer now; retrying later may work."""


@dataclass
class ErrorList:
    """Collects several validation problems so a client learns all of them at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_name: str, description: str) -> None:
        self.violations.append(FieldViolation(field_name, description))

    def collect(self, check: Callable[[], T]) -> T | None:
        """``check()``'s result; if it raises InvalidArgument, its violations are added here and None returned, so
        the checks after it still run and the answer lists every bad field."""
        try:
            return check()
        except InvalidArgument as error:
            self.violations.extend(error.violations or [FieldViolation("", error.message)])
            return None

    def raise_if_any(self) -> None:
        if not self.violations:
            return
        message = "; ".join(
            f"{v.field}: {v.description}" if v.field else v.description for v in self.violations
        )
        error = InvalidArgument(message)
        error.violations = list(self.violations)
        raise error
