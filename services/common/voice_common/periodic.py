"""Background work a service repeats for as long as it runs (sweeps, retries, fills)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

# What a failed round was, when it was an outage of a dependency (a database or object store not answering): the
# reason a person reads ("the database is not answering"), or None for any other failure.
OutageCheck = Callable[[BaseException], "str | None"]


async def repeat(
    work: Callable[[], Awaitable[object]],
    interval_seconds: float,
    *,
    what: str,
    logger: logging.Logger,
    wake: asyncio.Event | None = None,
    outage: OutageCheck | None = None,
) -> None:
    """Run ``work`` now, then every ``interval_seconds`` (sooner when ``wake`` is set), until cancelled.

    A round that fails is logged with its traceback (``what`` names it) and the next one runs on time: one bad round
    (a database that blinked, an object store timing out) must not end the loop for the life of the process.
    A failure that ``outage`` recognises as a dependency not answering is expected while it lasts: one WARNING
    without a traceback when the outage starts, one INFO when a round works again, nothing in between (the
    service's health already says NOT_SERVING, and a traceback every interval would bury the log)."""
    down = False
    while True:
        if wake is not None:
            wake.clear()
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason = outage(error) if outage is not None else None
            if reason is None:
                logger.exception(f"{what} failed; retrying next interval")
            elif not down:
                logger.warning(
                    f"{what} skipped: {reason}; retrying every {interval_seconds:g} s until it answers",
                    extra={"reason": reason},
                )
            down = reason is not None
        else:
            if down:
                logger.info(f"{what} works again")
            down = False
        if wake is None:
            await asyncio.sleep(interval_seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_seconds)
