"""Reading a client's request stream: a first message that configures the call, then the payload messages.

Every client-streaming RPC (ASR's StreamingTranscribe, TTS's SynthesizeDuplex, the profile service's uploads) has
this shape, a ``oneof payload`` whose first message is one case and every later message another. The refusals
(INVALID_ARGUMENT naming the field) are the RPC's own words, passed in: each API documents its messages.

A call that works while messages keep arriving (a live transcription, a duplex synthesis) reads them in a task of its
own into a queue that ends with None; :func:`next_item` is that queue's reader, so the reading task's error (a
message of the wrong kind, a text too long) reaches the call instead of being lost in the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, Protocol, TypeVar

from voice_common.errors import InvalidArgument


class OneofMessage(Protocol):
    """A request message with a oneof. A protocol, not protobuf's Message: a live session or a duplex synthesis
    (domain code, which must not import protobuf, not even for types) uses :func:`next_item` from here."""

    def WhichOneof(self, oneof_group: Any) -> str | None: ...


MessageT = TypeVar("MessageT", bound=OneofMessage)
ItemT = TypeVar("ItemT")


async def first_message(
    requests: AsyncIterable[MessageT],
    case: str,
    *,
    field: str,
    if_empty: str,
    if_other: str,
    oneof: str = "payload",
) -> tuple[MessageT, AsyncIterator[MessageT]]:
    """The stream's first message, which must have ``oneof`` set to ``case``, and an iterator over the rest.

    A stream that ends before its first message is refused with ``if_empty``, a first message of another case with
    ``if_other``; both name ``field``.
    """
    iterator = aiter(requests)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise InvalidArgument(if_empty, field=field) from None
    if first.WhichOneof(oneof) != case:
        raise InvalidArgument(if_other, field=field)
    return first, iterator


async def payloads(
    messages: AsyncIterable[OneofMessage], case: str, *, field: str, if_other: str, oneof: str = "payload"
) -> AsyncIterator[Any]:
    """The ``case`` field of each message, in order; a message of another case is refused with ``if_other``,
    naming ``field`` (the first message's case, sent again)."""
    async for message in messages:
        if message.WhichOneof(oneof) != case:
            raise InvalidArgument(if_other, field=field)
        yield getattr(message, case)


async def next_item(items: asyncio.Queue[ItemT | None], reader: asyncio.Future[None]) -> ItemT | None:
    """The next item ``reader`` put in ``items``, or None once it has put its closing None.

    If ``reader`` fails first, its error is raised here: waiting on the queue alone would wait forever for an item
    that a failed reader will never put.
    """
    if not items.empty():
        return items.get_nowait()
    getter: asyncio.Future[ItemT | None] = asyncio.ensure_future(items.get())
    waiting: set[asyncio.Future[Any]] = {getter, reader}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    reader.result()  # the reader failed: its error
    # The reader ended normally, so its items and the closing None are queued (a cancelled get takes nothing).
    return items.get_nowait() if not items.empty() else None
