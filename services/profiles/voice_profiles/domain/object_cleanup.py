"""Deleting objects without ever orphaning them.

Rules (docs/consistency.md):
- create (``creating``): the keys are first written to the outbox under an upload lease (entries due only when the
  lease ends), then the objects are written, then ONE transaction writes the rows and removes the lease entries.
  A create that fails or is cancelled before its commit deletes its objects at once; one killed at any point
  leaves objects that the outbox owns, and the sweeper deletes them when the lease ends. A commit, once begun,
  finishes even if the call is cancelled (the caller could not tell otherwise whether the rows exist).
- delete: rows are deleted and their keys written to the outbox in ONE transaction (``Transaction.pending_deletions``);
  after the commit ``delete_committed`` removes the objects and their outbox rows. A failure leaves the outbox row,
  which the sweeper retries with back-off (``drain``).
- an outbox key ending in ``/`` is a prefix: every object under it, as listed when the delete runs (a profile's
  voice prompts, which the TTS service writes without a row here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from voice_common.errors import Aborted
from voice_common.object_store import ObjectStore
from voice_profiles.domain.database_ports import Database, Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")


class ObjectCleanup:
    def __init__(
        self,
        database: Database,
        store: ObjectStore,
        clock: Callable[[], datetime],
        upload_lease: timedelta,
    ) -> None:
        self._database = database
        self._store = store
        self._clock = clock
        self._upload_lease = upload_lease
        # Creates in progress, and the commits and undos that outlive a cancelled call: shutdown waits until
        # none is left (``settle``).
        self._running: set[asyncio.Task[Any]] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def creating(self, keys: list[str]) -> AsyncIterator[ObjectCreate]:
        """Write the objects of a create under an upload lease, then ``ObjectCreate.commit`` the rows.

        Leaving the block without a commit (an error, a cancelled call) deletes what was written, after waiting
        for the writes still running.
        """
        self._began()
        try:
            now = self._clock()
            async with self._database.transaction() as tx:
                ids = await tx.pending_deletions.lease(keys, now, now + self._upload_lease)
            create = ObjectCreate(self, self._store, list(zip(ids, keys, strict=True)))
            try:
                yield create
            finally:
                await create.abandon()  # nothing when the block committed
        finally:
            self._ended()

    def track(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``work`` as a task that a cancelled caller does not stop and that ``settle`` waits for."""
        task = asyncio.ensure_future(work)
        self._running.add(task)
        self._began()
        task.add_done_callback(self._task_ended)
        return task

    def _began(self) -> None:
        self._busy += 1
        self._idle.clear()

    def _ended(self) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        self._ended()

    async def settle(self, limit_seconds: float) -> None:
        """Wait (at most ``limit_seconds``) until no create is in progress and no commit or undo runs: at shutdown,
        after the server stopped (which cancels the calls but does not wait for their handlers to finish), before
        the store and the database close, so that a drained process leaves no object behind."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit_seconds)
        except TimeoutError:
            log.warning(
                "creates still finishing at shutdown; the sweeper deletes their objects when the upload lease ends",
                extra={"count": self._busy},
            )

    async def commit_rows(
        self, lease: list[tuple[int, str]], write_rows: Callable[[Transaction], Awaitable[T]]
    ) -> T:
        """One transaction: remove the lease entries and write the rows. Errors in the statements (nothing
        committed) delete the objects before they propagate; an error of the commit itself leaves them to the
        lease, since the rows may exist after all."""
        statements_done = False
        try:
            async with self._database.transaction() as tx:
                if not await tx.pending_deletions.release([row_id for row_id, _ in lease], self._clock()):
                    raise Aborted(
                        "the upload took longer than its lease (PROFILES_UPLOAD_LEASE_SECONDS) to store, so it "
                        "was not kept: send it again"
                    )
                result = await write_rows(tx)
                statements_done = True
            return result
        except BaseException:
            if statements_done:
                log.warning(
                    "a create's commit failed; unless it went through after all, the sweeper deletes its objects "
                    "when the upload lease ends",
                    extra={"keys": [key for _, key in lease]},
                )
            else:
                await self.delete_committed(lease)
            raise

    async def delete_committed(self, pending: list[tuple[int, str]]) -> int:
        """Delete objects whose rows are gone; returns how many are still pending (left to the sweeper)."""
        if not pending:
            return 0
        results = await asyncio.gather(*(self._delete(key) for _, key in pending), return_exceptions=True)
        done = [row_id for (row_id, _), result in zip(pending, results, strict=True) if result is None]
        failures = [
            (row_id, key, result)
            for (row_id, key), result in zip(pending, results, strict=True)
            if isinstance(result, BaseException)
        ]
        try:
            async with self._database.transaction() as tx:
                await tx.pending_deletions.done(done)
                for row_id, key, error in failures:
                    log.warning(
                        "object delete failed, the sweeper will retry",
                        extra={"key": key, "error": str(error)},
                    )
                    await tx.pending_deletions.failed(row_id, repr(error), self._clock())
        except Exception:
            # The outbox rows are still there; the sweeper deletes the objects (again) later. Harmless.
            log.exception("could not update the deletion outbox")
        return len(failures)

    async def _delete(self, key: str) -> None:
        if not key.endswith("/"):
            await self._store.delete(key)
            return
        for listed in [listed async for listed in self._store.list_keys(key)]:
            await self._store.delete(listed)

    async def remove_abandoned_writes(self) -> int:
        """Remove the half-written temporary files of writes a killed process never finished (the filesystem
        store's; never an object), once older than the upload lease: no write still running is that old."""
        return await self._store.remove_abandoned_writes(self._upload_lease)

    async def drain(self, limit: int = 500) -> tuple[int, int]:
        """Retry due outbox entries; returns (deleted, still failing)."""
        async with self._database.transaction() as tx:
            due = await tx.pending_deletions.due(self._clock(), limit)
        failing = await self.delete_committed(due)
        return len(due) - failing, failing


class ObjectCreate:
    """The objects of one create, written under an upload lease (``ObjectCleanup.creating``)."""

    def __init__(self, cleanup: ObjectCleanup, store: ObjectStore, lease: list[tuple[int, str]]) -> None:
        self._cleanup = cleanup
        self._store = store
        self._lease = lease  # (outbox row id, key) of each object this create may write
        self._writes: list[asyncio.Future[None]] = []
        # The commit, or the undo: whichever began decides what becomes of the objects.
        self._outcome: asyncio.Task[Any] | None = None

    def put(self, key: str, data: bytes, content_type: str) -> Awaitable[None]:
        """Start writing one of the leased keys; await the result to wait for it.

        The write goes on when the caller is cancelled: a put runs in a worker thread that cancelling cannot stop,
        and an object landing after the undo deleted it would be orphaned, so the undo waits for every write.
        """
        if key not in {leased for _, leased in self._lease}:
            raise ValueError(f"{key!r} was not leased by this create")
        write = asyncio.ensure_future(self._store.put(key, data, content_type))
        self._writes.append(write)
        waiter = asyncio.shield(write)
        # The caller may never await it (another write failed first): the undo reads the write's outcome, so the
        # waiter's copy of a failure is marked read, or asyncio logs "Future exception was never retrieved".
        waiter.add_done_callback(_mark_read)
        return waiter

    async def commit(self, write_rows: Callable[[Transaction], Awaitable[T]]) -> T:
        """Write the rows (and release the lease) in one transaction, once every object is written.

        The commit runs to its end even if the caller is cancelled meanwhile; if its statements fail, the objects
        are deleted before the error reaches the caller.
        """
        for write in self._writes:
            await asyncio.shield(write)
        if self._outcome is not None:
            raise RuntimeError("a create commits once")
        outcome = self._outcome = self._cleanup.track(self._cleanup.commit_rows(self._lease, write_rows))
        result: T = await asyncio.shield(outcome)
        return result

    async def abandon(self) -> None:
        """Undo a create that will not commit: wait for its writes, then delete its objects and lease entries
        (what fails to delete stays in the outbox for the sweeper). A begun commit decides on its own."""
        if self._outcome is not None:
            return
        undo = self._outcome = self._cleanup.track(self._undo())
        await asyncio.shield(undo)

    async def _undo(self) -> None:
        await asyncio.gather(*self._writes, return_exceptions=True)
        await self._cleanup.delete_committed(self._lease)


def _mark_read(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
