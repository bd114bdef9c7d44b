"""What the gateway knows about the call being handled, shared by its interceptor (which authenticates, limits,
logs and counts) and the forwarding handler (which needs the tenant and request id, and counts bytes)."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from voice_gateway.authentication import Principal


@dataclass
class CallRecord:
    request_id: str
    principal: Principal
    bytes_in: int = 0
    bytes_out: int = 0


_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("gateway_call", default=None)


def current_call() -> CallRecord:
    record = _current.get()
    if record is None:
        raise RuntimeError("no call record: is the gateway's interceptor installed?")
    return record


def enter_call(record: CallRecord) -> None:
    _current.set(record)
