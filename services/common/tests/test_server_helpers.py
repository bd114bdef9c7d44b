"""The helpers every servicer shares: request streams, durations, model-control messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.profiles.v1 import profiles_service_pb2 as profiles_pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_common.errors import InvalidArgument
from voice_common.model_manager import ModelState, ModelStatus
from voice_common.server.durations import duration_from_seconds, optional_timedelta, seconds_of
from voice_common.server.model_control import model_state_number, model_status_message, requested_spec
from voice_common.server.request_streams import first_message, next_item, payloads

Request = asr_pb.StreamingTranscribeRequest


async def _stream(*messages: Request) -> AsyncIterator[Request]:
    for message in messages:
        yield message


def _config() -> Request:
    return Request(config=asr_pb.StreamingConfig(interim_results=True))


async def _first(*messages: Request) -> tuple[Request, AsyncIterator[Request]]:
    return await first_message(
        _stream(*messages), "config", field="config", if_empty="empty!", if_other="config first!"
    )


# -- request streams ---------------------------------------------------------------------------------


async def test_the_first_message_and_the_rest() -> None:
    first, rest = await _first(_config(), Request(audio=b"a"), Request(audio=b"b"))
    assert first.config.interim_results
    chunks = [chunk async for chunk in payloads(rest, "audio", field="config", if_other="once!")]
    assert chunks == [b"a", b"b"]


async def test_an_empty_stream_is_refused_with_its_message() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _first()
    assert caught.value.message == "empty!" and caught.value.field == "config"


async def test_a_first_message_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await _first(Request(audio=b"a"))
    assert caught.value.message == "config first!" and caught.value.field == "config"


async def test_a_second_config_is_refused_where_it_comes() -> None:
    _, rest = await _first(_config(), Request(audio=b"a"), _config(), Request(audio=b"b"))
    seen: list[bytes] = []
    with pytest.raises(InvalidArgument) as caught:
        async for chunk in payloads(rest, "audio", field="config", if_other="once!"):
            seen.append(chunk)
    assert seen == [b"a"] and caught.value.message == "once!"


async def test_an_upload_stream_reads_the_same_way() -> None:
    async def upload() -> AsyncIterator[profiles_pb.AddSampleRequest]:
        yield profiles_pb.AddSampleRequest(metadata=profiles_pb.SampleMetadata(profile_id="p"))
        yield profiles_pb.AddSampleRequest(chunk=b"xy")

    first, rest = await first_message(upload(), "metadata", field="metadata", if_empty="-", if_other="-")
    assert first.metadata.profile_id == "p"
    assert [c async for c in payloads(rest, "chunk", field="metadata", if_other="-")] == [b"xy"]


async def test_next_item_returns_what_the_reader_put_then_none() -> None:
    items: asyncio.Queue[str | None] = asyncio.Queue()

    async def read() -> None:
        for item in ("a", "b"):
            await asyncio.sleep(0)
            items.put_nowait(item)
        items.put_nowait(None)

    reader = asyncio.ensure_future(read())
    assert [await next_item(items, reader) for _ in range(3)] == ["a", "b", None]


async def test_next_item_raises_what_the_reader_raised() -> None:
    items: asyncio.Queue[str | None] = asyncio.Queue()

    async def read() -> None:
        await asyncio.sleep(0)
        raise InvalidArgument("text too long", field="text")

    reader = asyncio.ensure_future(read())
    with pytest.raises(InvalidArgument, match="text too long"):
        await next_item(items, reader)
    assert items.empty()


async def test_next_item_after_a_reader_that_ended_returns_its_items_first() -> None:
    items: asyncio.Queue[str | None] = asyncio.Queue()

    async def read() -> None:
        items.put_nowait("a")
        items.put_nowait(None)

    reader = asyncio.ensure_future(read())
    await reader
    assert await next_item(items, reader) == "a"
    assert await next_item(items, reader) is None


# -- durations ---------------------------------------------------------------------------------------


def test_seconds_to_a_duration_and_back() -> None:
    value = duration_from_seconds(1.25)
    assert (value.seconds, value.nanos) == (1, 250_000_000)
    assert seconds_of(value) == 1.25
    assert duration_from_seconds(-0.5).ToNanoseconds() == 0  # a stepped clock is not a negative duration
    assert duration_from_seconds(1e-9 * 0.6).ToNanoseconds() == 1  # to the nearest nanosecond


def test_an_optional_duration_field() -> None:
    request = profiles_pb.GetDownloadUrlRequest(sample_id="s")
    assert optional_timedelta(request, "ttl") is None
    request.ttl.FromNanoseconds(1_500_000_999)
    assert optional_timedelta(request, "ttl") == timedelta(seconds=1, microseconds=500_000)
    request.ttl.FromNanoseconds(0)
    assert optional_timedelta(request, "ttl") == timedelta(0)  # set to zero is not unset


# -- model control -----------------------------------------------------------------------------------


def _status(state: ModelState) -> ModelStatus:
    return ModelStatus(
        state=state,
        model="tiny",
        device="cpu",
        precision="int8",
        gpu_memory_bytes=0,
        load_seconds=2.5,
        message="ready",
    )


@pytest.mark.parametrize("state", list(ModelState))
def test_every_model_state_has_its_number_in_both_services(state: ModelState) -> None:
    asr = model_state_number(asr_pb.ModelState, state)
    tts = model_state_number(tts_pb.ModelState, state)
    assert asr_pb.ModelState.Name(asr) == tts_pb.ModelState.Name(tts) == f"MODEL_STATE_{state.name}"


def test_a_status_message_with_the_common_and_the_service_fields() -> None:
    message = model_status_message(
        asr_pb.ModelStatus,
        asr_pb.ModelState,
        _status(ModelState.READY),
        precision_field="compute_type",
        multilingual=True,
        queue_depth=3,
    )
    assert message == asr_pb.ModelStatus(
        state=asr_pb.MODEL_STATE_READY,
        model="tiny",
        device="cpu",
        compute_type="int8",
        multilingual=True,
        queue_depth=3,
        load_time=duration_from_seconds(2.5),
        message="ready",
    )
    tts = model_status_message(
        tts_pb.ModelStatus, tts_pb.ModelState, _status(ModelState.FAILED), precision_field="dtype"
    )
    assert tts.state == tts_pb.MODEL_STATE_FAILED and tts.dtype == "int8"


@dataclass(frozen=True)
class _Spec:
    model: str
    device: str
    compute_type: str
    allow_download: bool = True


def test_a_load_request_overrides_only_what_it_fills_in() -> None:
    configured = _Spec("base", "cpu", "int8", allow_download=False)
    assert requested_spec(configured, model=" small ", device="", compute_type="  ") == _Spec(
        "small", "cpu", "int8", allow_download=False
    )
