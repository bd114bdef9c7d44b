"""JSON logs that carry the request id, tenant and method, and the Prometheus metrics every service exports."""

from __future__ import annotations

import contextvars
import logging
import sys
import weakref
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from pythonjsonlogger.json import JsonFormatter

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
method_var: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="")

GRPC_REQUESTS = Counter(
    "voice_grpc_requests_total", "RPCs handled, by method and status code", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "voice_grpc_request_seconds",
    "Time from the start of an RPC to its end (streams: the whole stream)",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GRPC_IN_FLIGHT = Gauge("voice_grpc_in_flight", "RPCs in progress", ["service"])


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant = tenant_var.get()
        record.method = method_var.get()
        return True


_STANDARD_ATTRIBUTES = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "tenant",
    "method",
    "context",
}


class _TextFormatter(logging.Formatter):
    """Human-readable lines for `make run`, with the same facts the JSON lines carry (extras as key=value)."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", "")
        record.context = f" [{request_id}]" if request_id else ""
        line = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return line


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            _TextFormatter(f"%(asctime)s {service} %(levelname)s %(name)s%(context)s %(message)s")
        )
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def serve_metrics(port: int | None, host: str = "0.0.0.0") -> None:
    """Expose /metrics over HTTP in a background thread (off the event loop)."""
    if port:
        start_http_server(port, addr=host)


class _HasQueueDepth(Protocol):
    @property
    def queue_depth(self) -> int: ...


def track_queue_depth(gauge: Gauge, owner: _HasQueueDepth) -> None:
    """Report ``owner.queue_depth`` on ``gauge`` at every scrape (the last owner given wins: one per process).

    A weak reference: the gauge must not keep a closed app's synthesizer or transcriber (and its model) alive.
    """
    ref = weakref.ref(owner)

    def depth() -> float:
        current = ref()
        return float(current.queue_depth) if current is not None else 0.0

    gauge.set_function(depth)
