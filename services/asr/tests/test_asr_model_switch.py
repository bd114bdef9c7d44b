"""LoadModel on an ASR server that has a model READY, through a real server (the shipped tiny.en) on loopback: a load
that fails answers with what failed and the old model serves on; one that works swaps."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2

from voice.asr.v1 import asr_service_pb2 as pb
from voice.asr.v1 import asr_service_pb2_grpc as pb_grpc
from voice_asr.app import AsrApp
from voice_asr.engine import default_model
from voice_asr.settings import AsrSettings
from voice_asr.transcript import SAMPLE_RATE
from voice_common.config import CommonSettings
from voice_testing.media_files import encode_file
from voice_testing.served import served
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, speak, wer

SERVING = health_pb2.HealthCheckResponse.SERVING
TEXT = SENTENCES[0]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The shipped tiny.en from another directory (linked): a second model to switch to."""
    folder = tmp_path / "tiny.en-copy"
    folder.mkdir()
    for source in Path(default_model()).iterdir():
        (folder / source.name).symlink_to(source)
    return folder


@pytest.fixture
def not_a_model(tmp_path: Path) -> Path:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    return folder


async def test_a_load_model_that_fails_answers_why_and_the_model_before_serves_on(
    tmp_path: Path, copy: Path, not_a_model: Path
) -> None:
    common = CommonSettings(data_dir=tmp_path / "data", log_format="text")
    settings = AsrSettings(device="cpu", cpu_threads=2, preload=True, port=0, metrics_port=0)
    app = AsrApp.open(common, settings)
    try:
        await app.preload()
        async with served(common, app.registration(), app.readiness) as server:
            await server.wait_for_health(SERVING)
            asr = pb_grpc.AsrServiceStub(server.channel)
            request = pb.TranscribeRequest(content=encode_file(speak(TEXT, "slt"), SAMPLE_RATE, "wav"))

            async def transcript() -> str:
                text: str = (await asr.Transcribe(request, metadata=(("x-voice-tenant", "t-asr"),))).text
                assert wer(TEXT, text) <= SENTENCE_WER_BAR, text
                return text

            before = await transcript()
            for model, code in (
                (tmp_path / "nonexistent" / "model", grpc.StatusCode.NOT_FOUND),
                (not_a_model, grpc.StatusCode.FAILED_PRECONDITION),
            ):
                with pytest.raises(aio.AioRpcError) as caught:
                    await asr.LoadModel(pb.LoadModelRequest(model=str(model)))
                details = caught.value.details() or ""
                assert caught.value.code() == code, details
                assert str(model) in details and "ASR_MODEL" in details

                await app.readiness()  # what the health status says: still SERVING
                assert await server.health_status("") == SERVING
                status = (await asr.GetModelStatus(pb.GetModelStatusRequest())).status
                assert status.state == pb.MODEL_STATE_READY and status.model == settings.model, status
                assert f"loading {str(model)!r} to replace it failed" in status.message
                assert await transcript() == before

            loaded = (await asr.LoadModel(pb.LoadModelRequest(model=str(copy)))).status
            assert loaded.state == pb.MODEL_STATE_READY and loaded.model == str(copy), loaded
            assert "failed" not in loaded.message and not loaded.multilingual
            assert await transcript() == before  # the same weights, from the model now serving
            assert app.models.spec.model == str(copy)
            assert await server.health_status("") == SERVING
    finally:
        await app.close()
