"""Per-key rate limits: a token bucket for calls started, and a cap on streaming calls open at once.

Limits are per gateway replica (each keeps its own buckets in memory): with N replicas behind a balancer that
spreads connections evenly a key gets up to N times its rate. Operators size the per-key figures for that (see
docs/gateway.md). A refused call gets RESOURCE_EXHAUSTED with RetryInfo saying when a token will be there.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from voice_common.errors import ResourceExhausted

# Buckets of keys not seen for a while are dropped (a full bucket is what a new one would be anyway); this bounds
# the memory a gateway spends on keys whatever their number.
_MAX_IDLE_BUCKETS = 10_000


@dataclass(frozen=True)
class Limits:
    requests_per_second: float
    burst: int
    max_concurrent_streams: int

    def over(self, defaults: Limits) -> Limits:
        """These limits, with each unset (zero) figure taken from ``defaults``."""
        return Limits(
            self.requests_per_second or defaults.requests_per_second,
            self.burst or defaults.burst,
            self.max_concurrent_streams or defaults.max_concurrent_streams,
        )


class TokenBucket:
    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate = rate
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.updated = now

    def take(self, now: float) -> float:
        """0 when a token was taken; otherwise the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class KeyLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._streams: dict[str, int] = {}

    def admit(self, key_id: str, prefix: str, limits: Limits) -> None:
        """Take a token for a call of ``key_id``, or raise ResourceExhausted with the time to wait."""
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != limits.requests_per_second or bucket.capacity != limits.burst:
            bucket = TokenBucket(limits.requests_per_second, limits.burst, now)
            self._buckets[key_id] = bucket
        self._buckets.move_to_end(key_id)
        while len(self._buckets) > _MAX_IDLE_BUCKETS:
            self._buckets.popitem(last=False)
        wait = bucket.take(now)
        if wait > 0:
            raise ResourceExhausted(
                f"API key {prefix} is over its rate of {limits.requests_per_second:g} calls a second "
                f"(burst {limits.burst}); retry in {wait:.2f} s",
                retry_after_seconds=wait,
            )

    @contextlib.contextmanager
    def stream(self, key_id: str, prefix: str, limits: Limits) -> Iterator[None]:
        """Hold one of the key's stream slots for the ``with`` block, or raise ResourceExhausted."""
        open_now = self._streams.get(key_id, 0)
        if open_now >= limits.max_concurrent_streams:
            raise ResourceExhausted(
                f"API key {prefix} already has {open_now} streaming calls open, its limit; retry when one ends",
                retry_after_seconds=1.0,
            )
        self._streams[key_id] = open_now + 1
        try:
            yield
        finally:
            left = self._streams[key_id] - 1
            if left:
                self._streams[key_id] = left
            else:
                del self._streams[key_id]

    def open_streams(self, key_id: str) -> int:
        return self._streams.get(key_id, 0)
