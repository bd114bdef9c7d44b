"""Typed domain errors.

Domain code raises these; the server's error interceptor is the one place that maps them to gRPC status codes
(see ``voice_common.server.status_mapping``). Messages are written for the person who made the request: say what was wrong
and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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

    def __init__(self, kind: str, resource_id: str) -> None:
        super().__init__(f"{kind} {resource_id!r} not found")
        self.kind = kind
        self.resource_id = resource_id


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state to do it."""


class ResourceExhausted(DomainError):
    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Unauthenticated(DomainError):
    pass


class Unavailable(DomainError):
    """A dependency (database, object store, model) cannot answer now; retrying later may work."""


@dataclass
class ErrorList:
    """Collects several validation problems so a client learns all of them at once."""

    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, field_name: str, description: str) -> None:
        self.violations.append(FieldViolation(field_name, description))

    def raise_if_any(self) -> None:
        if not self.violations:
            return
        message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        error = InvalidArgument(message)
        error.violations = list(self.violations)
        raise error
