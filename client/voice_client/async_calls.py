"""The four call shapes over a grpc.aio channel: voice_client.calls for asyncio (same retries and errors)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from voice_client.calls import Response, _serialize
from voice_client.errors import error_from_rpc
from voice_client.messages import CHUNK_BYTES, AudioSource, Progress, ProgressCallback, UploadSource
from voice_client.retrying import RetryPolicy, RetryState
from voice_client.stream_call_status import StreamCallStatuses, real_error

Item = TypeVar("Item")
# grpc.aio.EOF: what read() returns at the end of a stream (grpc-stubs does not declare it).
EOF_MARK: Any = getattr(aio, "EOF")  # noqa: B009 - not in grpc-stubs


async def as_async_iterator(source: AsyncIterable[Item] | Iterable[Item]) -> AsyncIterator[Item]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


class AsyncUploadSource:
    """voice_client.messages.UploadSource for asyncio, which also takes an async iterable of bytes (a request
    body being received, say: sent as it comes, so it cannot be sent again and is not retried after
    UNAVAILABLE). Files are read on a worker thread, never blocking the event loop."""

    def __init__(self, source: AudioSource | AsyncIterable[bytes], chunk_bytes: int = CHUNK_BYTES) -> None:
        self._stream = source if isinstance(source, AsyncIterable) else None
        self._upload = None if isinstance(source, AsyncIterable) else UploadSource(source, chunk_bytes)
        self._sends = 0

    @property
    def rewindable(self) -> bool:
        return self._upload is not None and self._upload.rewindable

    async def chunks(self, progress: ProgressCallback | None = None) -> AsyncIterator[bytes]:
        self._sends += 1
        total = self._upload.total_bytes if self._upload is not None else None
        done = 0
        # ``progress`` is called here, on the event loop, never on the worker thread that reads a file.
        async for piece in self._pieces():
            done += len(piece)
            yield piece
            if progress is not None:
                progress(Progress(done, total))

    async def _pieces(self) -> AsyncIterator[bytes]:
        if self._upload is not None:
            pieces = self._upload.chunks()
            if isinstance(self._upload.source, bytes):
                for piece in pieces:
                    yield piece
                return
            while (read := await asyncio.to_thread(_next_piece, pieces)) is not None:
                yield read
            return
        assert self._stream is not None
        if self._sends > 1:
            raise RuntimeError("an async iterable of bytes can be sent only once")
        async for piece in self._stream:
            yield piece


def _next_piece(pieces: Iterator[bytes]) -> bytes | None:
    return next(pieces, None)


class AsyncRequestReplay(Generic[Item]):
    """voice_client.calls.RequestReplay for asyncio: what was sent is kept until the first response, so a retry
    sends it again; items are taken under one lock, and a superseded attempt stops at its next item."""

    def __init__(self, head: list[Item], source: AsyncIterator[Item]) -> None:
        self._lock = asyncio.Lock()
        self._kept = list(head)
        self._source = source
        self._keeping = True
        self._exhausted = False
        self._current = 0

    def attempt(self) -> AsyncIterator[Item]:
        self._current += 1
        return self._items(self._current)

    def settle(self) -> None:
        self._keeping = False

    async def _items(self, number: int) -> AsyncIterator[Item]:
        index = 0
        while True:
            async with self._lock:
                if number != self._current:
                    return
                if index < len(self._kept):
                    item = self._kept[index]
                elif self._exhausted:
                    return
                else:
                    try:
                        item = await anext(self._source)
                    except StopAsyncIteration:
                        self._exhausted = True
                        return
                    if self._keeping:
                        self._kept.append(item)
            index += 1
            yield item


class AsyncResponseStream(Generic[Response]):
    """The responses of a streaming call, failures raised as VoiceError; ``cancel()`` ends the call."""

    def __init__(self, call: Any, first: Response | None, method: str) -> None:
        self._call = call
        self._first = first
        self._method = method
        self._done = first is None

    def __aiter__(self) -> AsyncIterator[Response]:
        return self

    async def __anext__(self) -> Response:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._done:
            raise StopAsyncIteration
        try:
            response = await self._call.read()
        except grpc.RpcError as error:
            self._done = True
            raise error_from_rpc(error, self._method) from None
        if response is EOF_MARK:
            self._done = True
            raise StopAsyncIteration
        received: Response = response
        return received

    def cancel(self) -> None:
        self._done = True
        self._call.cancel()


class AsyncCalls:
    def __init__(
        self,
        channel: aio.Channel,
        metadata: tuple[tuple[str, str], ...],
        retry: RetryPolicy,
        timeout: float | None,
    ) -> None:
        self.channel = channel
        self.metadata = metadata
        self.retry = retry
        self.timeout = timeout

    def with_options(
        self, retry: RetryPolicy, timeout: float | None, metadata: tuple[tuple[str, str], ...] | None = None
    ) -> AsyncCalls:
        return AsyncCalls(self.channel, self.metadata if metadata is None else metadata, retry, timeout)

    def _state(self, method: str, repeatable: bool) -> RetryState:
        return RetryState(self.retry, method, repeatable, self.timeout)

    async def _pause(self, state: RetryState, error: grpc.RpcError, method: str) -> None:
        failure = error_from_rpc(error, method)
        delay = state.delay_after(failure)
        if delay is None:
            raise failure from None
        await asyncio.sleep(delay)

    async def unary(
        self, method: str, request: Message, response_type: type[Response], *, repeatable: bool
    ) -> Response:
        callable_ = self.channel.unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        state = self._state(method, repeatable)
        while True:
            try:
                response: Response = await callable_(
                    request, timeout=state.attempt_timeout(), metadata=self.metadata
                )
                return response
            except grpc.RpcError as error:
                await self._pause(state, error, method)

    async def server_stream(
        self, method: str, request: Message, response_type: type[Response]
    ) -> AsyncResponseStream[Response]:
        callable_ = self.channel.unary_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        state = self._state(method, repeatable=True)
        while True:
            call: Any = callable_(request, timeout=state.attempt_timeout(), metadata=self.metadata)
            try:
                first = await call.read()
            except grpc.RpcError as error:
                await self._pause(state, error, method)
                continue
            return AsyncResponseStream(call, None if first is EOF_MARK else first, method)

    async def client_stream(
        self,
        method: str,
        requests: Callable[[], AsyncIterator[Message]],
        response_type: type[Response],
        *,
        repeatable: bool,
        replayable: bool = True,
    ) -> Response:
        callable_ = self.channel.stream_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        # A request stream that cannot be made again (an async iterable, a file that cannot seek) is sent once.
        state = (
            self._state(method, repeatable) if replayable else RetryState(RetryPolicy.none(), method, False)
        )
        while True:
            call: Any = callable_(requests(), timeout=state.attempt_timeout(), metadata=self.metadata)
            # A refusal while the requests are still going out can reach us as grpc.aio's write-failed INTERNAL;
            # the recorder keeps the server's real answer (a RESOURCE_EXHAUSTED to wait out, a NOT_FOUND to raise).
            statuses = StreamCallStatuses(call)
            try:
                response: Response = await call
                return response
            except aio.AioRpcError as error:
                await self._pause(state, await real_error(error, statuses), method)
            except grpc.RpcError as error:
                await self._pause(state, error, method)

    async def duplex(
        self,
        method: str,
        head: list[Message],
        source: AsyncIterable[Message] | Iterable[Message],
        response_type: type[Response],
    ) -> AsyncResponseStream[Response]:
        callable_ = self.channel.stream_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        replay = AsyncRequestReplay(head, as_async_iterator(source))
        state = self._state(method, repeatable=True)
        while True:
            call: Any = callable_(replay.attempt(), timeout=state.attempt_timeout(), metadata=self.metadata)
            statuses = StreamCallStatuses(call)
            try:
                first = await call.read()
            except aio.AioRpcError as error:
                await self._pause(state, await real_error(error, statuses), method)
                continue
            except grpc.RpcError as error:
                await self._pause(state, error, method)
                continue
            replay.settle()
            return AsyncResponseStream(call, None if first is EOF_MARK else first, method)
