"""Waiting for work that cannot be interrupted (a worker thread, an engine's job) when the waiting task is cancelled.

A client that goes away cancels its RPC's task, but the thread doing its work keeps running until its next stop
check. Whoever holds a slot (the model, a transcription slot, the admission count) must not release it before that
thread has let go, or the next request would share the machine with a dying one.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_through_cancellation(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, even if this task is cancelled meanwhile, and re-raise that cancellation
    afterwards. The future's own result or error is left to the caller."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                cancelled = True
        except Exception:  # the future failed: it is done, the caller reads its error
            break
    if cancelled:
        raise asyncio.CancelledError
