"""The ASR service's first use of a hub model, against a real HTTP hub on loopback (voice_testing.hub_server)
serving the shipped tiny.en model (CTranslate2) as "Systran/faster-whisper-tiny.en": ASR_MODEL=tiny.en is
downloaded at start (only the files faster-whisper reads) and transcribes; with ASR_ALLOW_DOWNLOAD=false the
service is NOT_SERVING with the way out and the hub is not asked."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voice_asr.app import AsrApp
from voice_asr.engine import default_model
from voice_asr.settings import AsrSettings
from voice_asr.transcript import RecognitionOptions
from voice_common.config import CommonSettings
from voice_common.errors import FailedPrecondition, Unavailable
from voice_common.model_manager import ModelState
from voice_testing.hub_server import LocalHub
from voice_testing.speech import silence

REPO = "Systran/faster-whisper-tiny.en"  # what faster-whisper's size name "tiny.en" stands for


@pytest.fixture(scope="module")
def whisper_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped tiny.en files (linked, not copied), and a README that faster-whisper does not need."""
    folder = tmp_path_factory.mktemp("faster-whisper-tiny.en")
    for source in Path(default_model()).iterdir():
        (folder / source.name).symlink_to(source)
    (folder / "README.md").write_text("# tiny.en\n")
    return folder


@pytest.fixture
def hub(whisper_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub() as server:
        server.add_model(REPO, whisper_repo)
        for name, value in server.client_environment(tmp_path / "hub").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def _open(tmp_path: Path, **values: Any) -> AsrApp:
    settings = AsrSettings(
        model="tiny.en", device="cpu", cpu_threads=1, port=0, metrics_port=0, **values
    )  # ASR_ALLOW_DOWNLOAD: its default unless given
    return AsrApp.open(CommonSettings(data_dir=tmp_path / "data", log_format="text"), settings)


async def test_a_size_name_is_downloaded_at_start_and_transcribes(hub: LocalHub, tmp_path: Path) -> None:
    app = _open(tmp_path)
    try:
        assert app.models.preload_expected
        preload = asyncio.create_task(app.preload())
        reasons: list[str] = []
        while not preload.done():
            try:
                await app.readiness()
            except Unavailable as error:
                reasons.append(error.message)
            await asyncio.sleep(0.02)
        await preload
        assert app.models.state is ModelState.READY, app.models.status().message
        await app.readiness()
        assert any(reason.startswith(f"downloading {REPO}: ") for reason in reasons), reasons
        engine = app.models.loaded
        assert engine is not None and engine.languages == ("en",)
        transcript = await asyncio.to_thread(engine.transcribe, silence(1.0), RecognitionOptions())
        assert transcript.text.strip() == ""
    finally:
        await app.close()
    snapshot = next((tmp_path / "hub" / "models--Systran--faster-whisper-tiny.en" / "snapshots").iterdir())
    assert {path.name for path in snapshot.iterdir()} == {
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    }  # faster-whisper's files, not the README


async def test_with_downloads_off_a_missing_model_is_not_serving_and_the_hub_is_not_asked(
    hub: LocalHub, tmp_path: Path
) -> None:
    app = _open(tmp_path, allow_download=False)
    try:
        assert not app.models.preload_expected
        with pytest.raises(Unavailable) as caught:
            await app.readiness()
        message = caught.value.message
        assert REPO in message and "ASR_ALLOW_DOWNLOAD=false" in message
        assert "make models ASR_MODEL=tiny.en" in message and "ASR_MODEL" in message
        with pytest.raises(FailedPrecondition):
            await app.models.load()
        assert app.models.state is ModelState.FAILED
    finally:
        await app.close()
    assert hub.requests == []
