"""The four call shapes over a sync gRPC channel, with the key, deadlines, retries (voice_client.retrying) and
errors as :class:`~voice_client.errors.VoiceError`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import Message

from voice_client.errors import error_from_rpc
from voice_client.retrying import RetryPolicy, RetryState

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)
Item = TypeVar("Item")


class RequestReplay(Generic[Item]):
    """A request stream that a retry can send again from its start: what was taken from the caller's iterator
    is kept until the first response arrives (``settle``), and each attempt reads the kept items, then the
    source. gRPC reads a request stream on a thread of its own, so a failed attempt's reader may still be inside
    the source when the next attempt starts: items are taken and kept under one lock, and a superseded attempt
    stops at its next item."""

    def __init__(self, head: list[Item], source: Iterator[Item]) -> None:
        self._lock = threading.Lock()
        self._kept = list(head)
        self._source = source
        self._keeping = True
        self._exhausted = False
        self._current = 0

    def attempt(self) -> Iterator[Item]:
        # Not under the lock: a superseded reader may hold it while it waits for the caller's next item.
        self._current += 1
        return self._items(self._current)

    def settle(self) -> None:
        """The call answered: no attempt will follow, so nothing more is kept."""
        with self._lock:
            self._keeping = False

    def _items(self, number: int) -> Iterator[Item]:
        index = 0
        while True:
            with self._lock:
                if number != self._current:
                    return
                if index < len(self._kept):
                    item = self._kept[index]
                elif self._exhausted:
                    return
                else:
                    try:
                        item = next(self._source)
                    except StopIteration:
                        self._exhausted = True
                        return
                    if self._keeping:
                        self._kept.append(item)
            index += 1
            yield item


class ResponseStream(Generic[Response]):
    """The responses of a streaming call, failures raised as VoiceError; ``cancel()`` ends the call."""

    def __init__(self, call: Any, first: Response | None, method: str) -> None:
        self._call = call
        self._first = first
        self._method = method
        self._done = first is None

    def __iter__(self) -> Iterator[Response]:
        return self

    def __next__(self) -> Response:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._done:
            raise StopIteration
        try:
            response: Response = next(self._call)
        except StopIteration:
            self._done = True
            raise
        except grpc.RpcError as error:
            self._done = True
            raise error_from_rpc(error, self._method) from None
        return response

    def cancel(self) -> None:
        self._done = True
        self._call.cancel()


class Calls:
    """Calls on one channel with one key; ``with_options`` makes a view with another retry policy or timeout."""

    def __init__(
        self,
        channel: grpc.Channel,
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
    ) -> Calls:
        return Calls(self.channel, self.metadata if metadata is None else metadata, retry, timeout)

    def _state(self, method: str, repeatable: bool) -> RetryState:
        return RetryState(self.retry, method, repeatable, self.timeout)

    def _pause(self, state: RetryState, error: grpc.RpcError, method: str) -> None:
        """Sleeps before the next attempt, or raises the error when there is none."""
        failure = error_from_rpc(error, method)
        delay = state.delay_after(failure)
        if delay is None:
            raise failure from None
        time.sleep(delay)

    def unary(
        self, method: str, request: Message, response_type: type[Response], *, repeatable: bool
    ) -> Response:
        callable_ = self.channel.unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        state = self._state(method, repeatable)
        while True:
            try:
                response: Response = callable_(
                    request, timeout=state.attempt_timeout(), metadata=self.metadata
                )
                return response
            except grpc.RpcError as error:
                self._pause(state, error, method)

    def server_stream(
        self, method: str, request: Message, response_type: type[Response]
    ) -> ResponseStream[Response]:
        """Retried until the first response arrives (none of the platform's streams acts before answering)."""
        callable_ = self.channel.unary_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        state = self._state(method, repeatable=True)
        while True:
            call: Any = callable_(request, timeout=state.attempt_timeout(), metadata=self.metadata)
            try:
                first: Response = next(call)
            except StopIteration:
                return ResponseStream(call, None, method)
            except grpc.RpcError as error:
                self._pause(state, error, method)
                continue
            return ResponseStream(call, first, method)

    def client_stream(
        self,
        method: str,
        requests: Callable[[], Iterator[Message]],
        response_type: type[Response],
        *,
        repeatable: bool,
        replayable: bool = True,
    ) -> Response:
        """``requests()`` makes the request stream afresh for each attempt."""
        callable_ = self.channel.stream_unary(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        # A request stream that cannot be made again (a file object that cannot seek) is sent once.
        state = (
            self._state(method, repeatable) if replayable else RetryState(RetryPolicy.none(), method, False)
        )
        while True:
            try:
                response: Response = callable_(
                    requests(), timeout=state.attempt_timeout(), metadata=self.metadata
                )
                return response
            except grpc.RpcError as error:
                self._pause(state, error, method)

    def duplex(
        self, method: str, head: list[Message], source: Iterable[Message], response_type: type[Response]
    ) -> ResponseStream[Response]:
        """``head`` (the config) then ``source``; retried until the first response, replaying what was sent."""
        callable_ = self.channel.stream_stream(
            method, request_serializer=_serialize, response_deserializer=response_type.FromString
        )
        replay = RequestReplay(head, iter(source))
        state = self._state(method, repeatable=True)
        while True:
            call: Any = callable_(replay.attempt(), timeout=state.attempt_timeout(), metadata=self.metadata)
            try:
                first: Response = next(call)
            except StopIteration:
                replay.settle()
                return ResponseStream(call, None, method)
            except grpc.RpcError as error:
                self._pause(state, error, method)
                continue
            replay.settle()
            return ResponseStream(call, first, method)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
