"""The gateway's Prometheus metrics. Tenants in labels are the configured ones (GATEWAY_METRIC_TENANTS) or
"other", so a platform with many tenants still has a bounded number of time series."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("voice_gateway_calls_total", "Calls answered by the gateway", ["method", "code", "tenant"])
CALL_SECONDS = Histogram(
    "voice_gateway_call_seconds",
    "Time from a call's start to its status",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FORWARDED_BYTES = Counter(
    "voice_gateway_forwarded_bytes_total",
    "Message bytes forwarded (in: client to backend; out: backend to client)",
    ["method", "direction"],
)
STREAMS_IN_FLIGHT = Gauge("voice_gateway_streams_in_flight", "Streaming calls open now", ["method"])
AUTH_FAILURES = Counter(
    "voice_gateway_auth_failures_total",
    "Calls refused for their credential (missing, malformed, unknown, revoked, expired) or scope",
    ["reason"],
)
RATE_LIMITED = Counter(
    "voice_gateway_rate_limited_total",
    "Calls refused by a key's limits (rate: calls a second; streams: concurrent streams)",
    ["limit", "tenant"],
)


class TenantLabels:
    def __init__(self, tenants: Iterable[str]) -> None:
        self._tenants = frozenset(tenants)

    def __call__(self, tenant: str) -> str:
        return tenant if tenant in self._tenants else "other"
