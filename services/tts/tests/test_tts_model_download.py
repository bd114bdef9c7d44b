"""The TTS service's first use of a hub model, against a real HTTP hub on loopback (voice_testing.hub_server)
serving the tiny model under the default model's id: downloaded at start with progress in readiness and the log,
then READY; no hub contact with TTS_ALLOW_DOWNLOAD=false or a cache filled beforehand; a quick failure with the
ways out when the hub cannot be reached."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from tools.tiny_model import build_tiny_model
from voice.tts.v1 import tts_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2_grpc as pb_grpc
from voice_common.config import CommonSettings
from voice_common.errors import FailedPrecondition, Unavailable
from voice_common.model_download import ModelDownloader
from voice_testing.hub_server import LocalHub
from voice_testing.served import served
from voice_tts.app import TtsApp
from voice_tts.model_manager import DEFAULT_MODEL, ModelState
from voice_tts.settings import TtsSettings


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's files, served as the repository of the default model's id."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3-tts", seed=0)


@pytest.fixture
def hub(tiny_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """The hub huggingface_hub talks to (HF_ENDPOINT) and an empty cache (HF_HUB_CACHE) for this test."""
    with LocalHub() as server:
        server.add_model(DEFAULT_MODEL, tiny_repo)
        for name, value in server.client_environment(tmp_path / "hub").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def _settings(**values: Any) -> TtsSettings:
    return TtsSettings(port=0, metrics_port=0, **values)  # TTS_MODEL and TTS_ALLOW_DOWNLOAD: their defaults


def _common(tmp_path: Path) -> CommonSettings:
    return CommonSettings(data_dir=tmp_path / "data", log_format="text")


async def _readiness_problem(app: TtsApp) -> str | None:
    try:
        await app.readiness()
    except Unavailable as error:
        return error.message
    return None


async def test_a_hub_model_missing_from_the_cache_is_downloaded_at_start_then_ready(
    hub: LocalHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voice_common.model_manager")
    hub.bytes_per_second = 2_000_000  # about 1.3 s for the tiny model: long enough to watch
    app = await TtsApp.open(_common(tmp_path), _settings())
    try:
        assert app.models.preload_expected  # python -m voice_tts starts it (model_service.serve)
        assert "downloading it first" in (await _readiness_problem(app) or "")
        preload = asyncio.create_task(app.preload())
        reasons: list[str] = []
        while not preload.done():
            reason = await _readiness_problem(app)
            if reason is not None:
                reasons.append(reason)
            await asyncio.sleep(0.05)
        await preload

        progress = [re.fullmatch(rf"downloading {DEFAULT_MODEL}: (\d+)% of 2.7 MB", r) for r in reasons]
        percents = [int(match[1]) for match in progress if match]
        assert any(0 < percent < 100 for percent in percents), reasons  # NOT_SERVING with the progress
        assert percents == sorted(percents)
        status = app.models.status()
        assert (status.state, status.model) == (ModelState.READY, DEFAULT_MODEL)
        loaded = app.models.loaded
        assert loaded is not None and loaded.model.tts_model_type == "base"
        assert await _readiness_problem(app) is None  # SERVING once it is there
    finally:
        await app.close()
    logged = [r for r in caplog.records if r.getMessage() == "downloading the TTS model"]
    assert logged and getattr(logged[-1], "percent", None) == 100
    assert getattr(logged[0], "model", None) == DEFAULT_MODEL and getattr(logged[0], "size", None) == "2.7 MB"
    assert len(logged) <= 3  # a line now and then (every 10 s), not one per progress report


async def test_load_model_of_a_hub_id_downloads_it_not_serving_meanwhile(
    hub: LocalHub, tiny_repo: Path, tmp_path: Path
) -> None:
    """A running replica told to switch (LoadModel) to a model it does not have fetches it like a first start."""
    hub.bytes_per_second = 2_000_000
    app = await TtsApp.open(_common(tmp_path), _settings(model=str(tiny_repo)))
    try:
        async with served(_common(tmp_path), app.registration(), app.readiness) as server:
            await server.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
            stub = pb_grpc.TtsServiceStub(server.channel)
            loading = asyncio.ensure_future(stub.LoadModel(pb.LoadModelRequest(model="0.6B")))
            await server.wait_for_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            assert (server.server.last_readiness_error or "").startswith(
                f"Unavailable: downloading {DEFAULT_MODEL}"
            )
            status = (await loading).status
            assert status.state == pb.MODEL_STATE_READY and status.model == "0.6B", status
            await server.wait_for_health(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await app.close()
    assert any(path.startswith("/lfs/") for path, _ in hub.file_requests())


async def test_a_model_pulled_beforehand_loads_without_the_hub(hub: LocalHub, tmp_path: Path) -> None:
    """`make models`, then `make run`: the default TTS_MODEL is found in the cache; nothing is asked of the hub."""
    ModelDownloader().download(DEFAULT_MODEL)
    hub.requests.clear()
    app = await TtsApp.open(_common(tmp_path), _settings(allow_download=False))
    try:
        assert not app.models.preload_expected and await _readiness_problem(app) is None
        assert (await app.models.load()).state is ModelState.READY
    finally:
        await app.close()
    assert hub.requests == []


async def test_with_downloads_off_a_missing_model_is_not_serving_and_the_hub_is_not_asked(
    hub: LocalHub, tmp_path: Path
) -> None:
    app = await TtsApp.open(_common(tmp_path), _settings(allow_download=False))
    try:
        assert not app.models.preload_expected
        reason = await _readiness_problem(app) or ""
        assert DEFAULT_MODEL in reason and "TTS_ALLOW_DOWNLOAD=false" in reason and "`make models`" in reason
        assert "TTS_MODEL=models/tiny-qwen3-tts" in reason and "make tiny-model" in reason
        with pytest.raises(FailedPrecondition) as info:
            await app.models.load()
        status = app.models.status()
        assert status.state is ModelState.FAILED and "TTS_ALLOW_DOWNLOAD=false" in status.message
        assert info.value.message == status.message
    finally:
        await app.close()
    assert hub.requests == []


async def test_an_unreachable_hub_fails_within_seconds_with_the_ways_out(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    app = await TtsApp.open(_common(tmp_path), _settings())
    try:
        started = time.monotonic()
        await app.preload()
        assert time.monotonic() - started < 5
        status = app.models.status()
        assert status.state is ModelState.FAILED
        message = status.message
        assert DEFAULT_MODEL in message and "not in the local Hugging Face cache" in message
        assert "cannot be reached (Connection refused)" in message and "`make models`" in message
        assert "TTS_MODEL=models/tiny-qwen3-tts" in message and "make tiny-model" in message
        assert await _readiness_problem(app) == f"the TTS model is not available: {message}"
    finally:
        await app.close()
