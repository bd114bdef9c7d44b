"""``voice_common.periodic.repeat``: background rounds keep running through failures, and an outage of a dependency
is logged once when it starts and once when it ends, not with a traceback every interval."""

from __future__ import annotations

import asyncio
import logging

import pytest

from voice_common.periodic import repeat

log = logging.getLogger("test.periodic")


class Down(Exception):
    """A dependency that does not answer."""


def outage(error: BaseException) -> str | None:
    return "the database is not answering" if isinstance(error, Down) else None


async def run_rounds(outcomes: list[BaseException | None], caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run ``repeat`` over rounds that raise (or not) as ``outcomes`` say; the log records, as 'LEVEL message'."""
    done = asyncio.Event()
    rounds = iter(outcomes)
    remaining = len(outcomes)

    async def work() -> None:
        outcome = next(rounds, None)
        if outcome is not None:
            raise outcome

    async def counted() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()
        await work()

    caplog.set_level(logging.DEBUG, logger=log.name)
    task = asyncio.create_task(repeat(counted, 0.001, what="sweep", logger=log, outage=outage))
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(0.01)  # the last round's log line
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return [
        f"{record.levelname} {record.getMessage()}" + (" +traceback" if record.exc_info else "")
        for record in caplog.records
        if record.name == log.name
    ]


async def test_an_outage_is_logged_when_it_starts_and_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    lines = await run_rounds([None, Down(), Down(), Down(), None, None, Down(), None], caplog)
    assert lines == [
        "WARNING sweep skipped: the database is not answering; retrying every 0.001 s until it answers",
        "INFO sweep works again",
        "WARNING sweep skipped: the database is not answering; retrying every 0.001 s until it answers",
        "INFO sweep works again",
    ]


async def test_any_other_failure_is_an_error_with_its_traceback_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = await run_rounds([RuntimeError("bug"), RuntimeError("bug"), Down(), RuntimeError("bug")], caplog)
    assert lines == [
        "ERROR sweep failed; retrying next interval +traceback",
        "ERROR sweep failed; retrying next interval +traceback",
        "WARNING sweep skipped: the database is not answering; retrying every 0.001 s until it answers",
        "ERROR sweep failed; retrying next interval +traceback",
    ]
