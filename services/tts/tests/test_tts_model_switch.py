"""LoadModel on a TTS server that has a model READY, through a real server (tiny models) on loopback: a load that
fails answers with what failed and the old model serves on; one that works swaps, and a call already running
finishes on the model it began with (its voice prompt and its speech from one model), which is released after."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2
from test_tts_service import TEXT, config, meta

from tools.tiny_model import build_tiny_model
from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_testing.served import Served, served
from voice_tts.app import TtsApp
from voice_tts.settings import TtsSettings

pytestmark = pytest.mark.usefixtures("one_thread")

SERVING = health_pb2.HealthCheckResponse.SERVING
TENANT = "t-model-switch"


@pytest.fixture(scope="module")
def other_tiny_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model, with other weights (so its audio differs from the first's)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-other") / "tiny-qwen3-tts", seed=1)


@contextlib.asynccontextmanager
async def tts_on(model: Path, tmp_path: Path) -> AsyncIterator[tuple[Served, TtsApp, Any]]:
    """A TTS server on ``model`` with the model loaded (READY) and the health SERVING. Inline voices only: the profile
    service is never called."""
    common = CommonSettings(data_dir=tmp_path / "data", log_format="text")
    app = await TtsApp.open(common, TtsSettings(model=str(model), port=0, metrics_port=0, preload=True))
    try:
        await app.preload()
        async with served(common, app.registration(), app.readiness) as running:
            await running.wait_for_health(SERVING)
            yield running, app, pb_grpc.TtsServiceStub(running.channel)
    finally:
        await app.close()


async def speech(tts: Any, seed: int) -> bytes:
    response = await tts.Synthesize(
        pb.SynthesizeRequest(config=config(seed=seed), text=TEXT), metadata=meta(TENANT)
    )
    audio: bytes = response.audio
    return audio


async def test_a_load_model_that_fails_answers_why_and_the_model_before_serves_on(
    tiny_dir: Path, other_tiny_dir: Path, tmp_path: Path
) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    async with tts_on(tiny_dir, tmp_path) as (server, app, tts):
        before = await speech(tts, seed=5)
        for model, code in (
            (tmp_path / "nonexistent" / "model", grpc.StatusCode.NOT_FOUND),
            (not_a_model, grpc.StatusCode.FAILED_PRECONDITION),
        ):
            with pytest.raises(aio.AioRpcError) as caught:
                await tts.LoadModel(pb.LoadModelRequest(model=str(model)))
            details = caught.value.details() or ""
            assert caught.value.code() == code, details
            assert str(model) in details and "TTS_MODEL" in details and "make tiny-model" in details

            await app.readiness()  # what the health status says: still SERVING
            assert await server.health_status("") == SERVING
            status = (await tts.GetModelStatus(pb.GetModelStatusRequest())).status
            assert status.state == pb.MODEL_STATE_READY and status.model == str(tiny_dir), status
            assert status.device == "cpu" and status.load_time.ToNanoseconds() > 0
            assert f"loading {str(model)!r} to replace it failed" in status.message
            assert await speech(tts, seed=5) == before  # the same model speaks, the same way

        loaded = (await tts.LoadModel(pb.LoadModelRequest(model=str(other_tiny_dir)))).status
        assert loaded.state == pb.MODEL_STATE_READY and loaded.model == str(other_tiny_dir)
        assert "failed" not in loaded.message
        after = await speech(tts, seed=5)
        assert after and after != before  # the other model's weights speak differently
        assert await server.health_status("") == SERVING


async def test_a_call_running_when_the_model_is_switched_finishes_on_the_model_it_began_with(
    tiny_dir: Path, other_tiny_dir: Path, tmp_path: Path
) -> None:
    """A duplex call gets its second sentence after LoadModel swapped the model: it is still spoken by the first
    model, with the first model's voice prompt, exactly as a call with no switch speaks it."""
    start = pb.SynthesizeDuplexRequest(config=config(seed=11))
    sentences = [
        pb.SynthesizeDuplexRequest(text="Hello there. "),
        pb.SynthesizeDuplexRequest(text="Bye now."),
    ]
    async with tts_on(tiny_dir, tmp_path) as (_, app, tts):

        async def requests(queue: asyncio.Queue[pb.SynthesizeDuplexRequest | None]) -> AsyncIterator[Any]:
            while (message := await queue.get()) is not None:
                yield message

        async def audio_of(call: Any) -> bytes:
            """The audio of the rest of the call, which ends with the summary."""
            parts = []
            while (message := await call.read()).WhichOneof("payload") != "summary":
                parts.append(message.audio.data)
            return b"".join(parts)

        alone: asyncio.Queue[pb.SynthesizeDuplexRequest | None] = asyncio.Queue()
        for message in (start, *sentences, None):
            alone.put_nowait(message)
        expected = await audio_of(tts.SynthesizeDuplex(requests(alone), metadata=meta(TENANT)))
        first_model = weakref.ref(app.models.loaded)

        queue: asyncio.Queue[pb.SynthesizeDuplexRequest | None] = asyncio.Queue()
        call = tts.SynthesizeDuplex(requests(queue), metadata=meta(TENANT))
        queue.put_nowait(start)
        queue.put_nowait(sentences[0])
        assert (await call.read()).WhichOneof("payload") == "start"
        first_audio = await call.read()
        assert first_audio.WhichOneof("payload") == "audio"  # the first sentence is being spoken

        loaded = (await tts.LoadModel(pb.LoadModelRequest(model=str(other_tiny_dir)))).status
        assert loaded.state == pb.MODEL_STATE_READY and loaded.model == str(other_tiny_dir)
        assert first_model() is not None  # the running call holds it
        queue.put_nowait(sentences[1])
        queue.put_nowait(None)
        assert first_audio.audio.data + await audio_of(call) == expected

        assert await call.code() == grpc.StatusCode.OK  # the call has ended, on the server too
        # The call has ended: nothing holds the first model any more.
        gc.collect()
        assert first_model() is None
        status = (await tts.GetModelStatus(pb.GetModelStatusRequest())).status
        assert status.model == str(other_tiny_dir) and status.state == pb.MODEL_STATE_READY
