"""Background work a service repeats for as long as it runs (sweeps, retries, fills)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


async def repeat(
    work: Callable[[], Awaitable[object]],
    interval_seconds: float,
    *,
    what: str,
    logger: logging.Logger,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``work`` now, then every ``interval_seconds`` (sooner when ``wake`` is set), until cancelled.

    A round that fails is logged with its traceback (``what`` names it) and the next one runs on time: one bad round
    (a database that blinked, an object store timing out) must not end the loop for the life of the process."""
    while True:
        if wake is not None:
            wake.clear()
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(f"{what} failed; retrying next interval")
        if wake is None:
            await asyncio.sleep(interval_seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_seconds)
