"""When a failed call is tried again, and after how long.

Two codes are retried, and only where a second attempt cannot do something twice:

- ``RESOURCE_EXHAUSTED`` **with** a ``RetryInfo``: the platform refused the call before doing anything (the
  gateway's rate or stream limit per key, a full TTS or ASR queue, the ASR live-stream limit), and says when to
  come back; the client waits exactly that long (plus up to 10 % so a crowd of clients does not return at once).
  Every call is retried on it. ``RESOURCE_EXHAUSTED`` without one is gRPC refusing a message or metadata that is
  too large, which the same request meets again: never retried.
- ``UNAVAILABLE`` (a service down, starting or draining; the gateway cannot reach it): the call may have been
  carried out before its answer was lost, so it is retried only for calls that are safe to repeat — reads,
  idempotent writes (UpdateProfile, UpdateSample, RevokeApiKey), uploads, which always carry a ``request_id`` the
  profile service deduplicates (AddSample, ImportProfile), and any stream before its first response arrives (no
  stream of the platform acts before it answers: TTS stores a generation only once the stream completes).
  Creates without a request id (CreateProfile, CreateApiKey), deletes and a stored unary Synthesize are not.
  Back-off: exponential with jitter (``initial_backoff`` doubling up to ``max_backoff``, each wait drawn between
  half and all of it).

Attempts are bounded (``max_attempts``) and so is the time: no attempt starts later than ``deadline`` seconds after
the first, nor past the call's own timeout, and a wait that would end after either is not begun.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from voice_client.errors import VoiceError


class Keep(enum.Enum):
    """``with_options(timeout=Keep.KEEP)``: the timeout as it is (None already means "no limit")."""

    KEEP = "keep"


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen: the method, the attempt that failed (1 = the first), its error and the wait."""

    method: str
    attempt: int
    error: VoiceError
    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries (module docstring). ``RetryPolicy.none()`` never retries. ``on_retry`` is told of
    each retry before its wait (a CLI's "busy, retrying in 1.2 s"; logs)."""

    max_attempts: int = 5
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    multiplier: float = 2.0
    deadline: float = 60.0
    on_retry: Callable[[RetryEvent], None] | None = field(default=None, compare=False)

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)


class RetryState:
    """The retries of one call: ``delay_after(error)`` is the wait before the next attempt, or None to give up."""

    def __init__(
        self, policy: RetryPolicy, method: str, repeatable: bool, timeout: float | None = None
    ) -> None:
        self.policy = policy
        self.method = method
        self.repeatable = repeatable
        self.attempt = 0
        self.started = time.monotonic()
        self.call_deadline = self.started + timeout if timeout is not None else None

    def attempt_timeout(self) -> float | None:
        """The time left of the call's own timeout, for the next attempt's gRPC deadline."""
        self.attempt += 1
        if self.call_deadline is None:
            return None
        return max(0.001, self.call_deadline - time.monotonic())

    def retryable(self, error: VoiceError) -> bool:
        if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return error.retry_after is not None
        return error.code == grpc.StatusCode.UNAVAILABLE and self.repeatable

    def delay_after(self, error: VoiceError) -> float | None:
        policy = self.policy
        if self.attempt >= policy.max_attempts or not self.retryable(error):
            return None
        if error.retry_after is not None:
            delay = error.retry_after * (1 + random.uniform(0, 0.1))
        else:
            ceiling = min(
                policy.max_backoff, policy.initial_backoff * policy.multiplier ** (self.attempt - 1)
            )
            delay = random.uniform(ceiling / 2, ceiling)
        resume = time.monotonic() + delay
        if resume > self.started + policy.deadline:
            return None
        if self.call_deadline is not None and resume >= self.call_deadline:
            return None
        if policy.on_retry is not None:
            policy.on_retry(RetryEvent(self.method, self.attempt, error, delay))
        return delay
