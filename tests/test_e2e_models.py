"""End to end: ``voice-admin models pull`` (what ``make models`` runs) against a hub on loopback
(voice_testing.hub_server), then ``python -m voice_tts`` serving what it pulled with no other setting, the
way ``make models`` and then ``make run`` go on a machine with a network."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import SERVING, admin, explain, free_port, service, service_env, stop

from tools.tiny_model import build_tiny_model
from voice_asr.engine import default_model
from voice_testing.hub_server import LocalHub
from voice_tts.model_manager import DEFAULT_MODEL

pytestmark = pytest.mark.slow
# Importing torch and qwen_tts takes a while on a small machine.
START_SECONDS = 90.0


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """The tiny Qwen3-TTS under the default TTS model's id, and the shipped tiny.en as faster-whisper's."""
    tiny = build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3-tts", seed=0)
    with LocalHub() as server:
        server.add_model(DEFAULT_MODEL, tiny)
        server.add_model("Systran/faster-whisper-tiny.en", Path(default_model()))
        yield server


def hub_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = service_env(
        tmp_path / "data",
        HF_ENDPOINT=endpoint,
        HF_HUB_CACHE=str(tmp_path / "hub"),
        OMP_NUM_THREADS="1",
    )
    env.pop("HF_HUB_OFFLINE", None)
    return env


def test_pull_then_the_tts_service_serves_the_model_from_the_cache(hub: LocalHub, tmp_path: Path) -> None:
    env = hub_env(tmp_path, hub.endpoint)
    pulled = admin(env, "models", "pull")  # tts, the default TTS_MODEL
    assert pulled.returncode == 0, explain(pulled)
    assert "100%" in pulled.stderr and "B/s" in pulled.stderr, explain(pulled)  # the progress bar
    assert f"{DEFAULT_MODEL}: 11 files verified, 11 downloaded (2.7 MB)" in pulled.stdout, explain(pulled)
    assert f"TTS_MODEL={DEFAULT_MODEL}" in pulled.stdout

    # A corrupted file in the cache is found by the next pull, named, and downloaded again.
    snapshot = next((tmp_path / "hub" / "models--Qwen--Qwen3-TTS-12Hz-0.6B-Base" / "snapshots").iterdir())
    (snapshot / "speech_tokenizer" / "config.json").write_text("{}")
    again = admin(env, "models", "pull", "tts")
    assert again.returncode == 0, explain(again)
    assert "11 files verified, 1 downloaded" in again.stdout, explain(again)
    assert "corrupted in the cache: speech_tokenizer/config.json" in again.stdout, explain(again)
    assert "speech_tokenizer/config.json" in again.stderr  # the warning, with the file and the reason

    hub.requests.clear()
    env |= {"TTS_PORT": str(free_port()), "TTS_METRICS_PORT": str(free_port()), "TTS_PRELOAD": "true"}
    with service(env, tmp_path / "logs", module="voice_tts", prefix="TTS") as tts:
        tts.wait_for(SERVING, timeout=START_SECONDS)  # preloaded: the model is in memory
        assert stop(tts) == 0, tts.describe()
        loaded = [json.loads(line) for line in tts.stderr().splitlines() if '"TTS model loaded"' in line]
        assert loaded and loaded[0]["model"] == DEFAULT_MODEL, tts.describe()
        # A quiet start: JSON lines only (qwen_tts's import banners are gone), nothing on stdout.
        assert all(line.startswith("{") for line in tts.stderr().splitlines() if line), tts.stderr()
        assert tts.stdout() == ""
    assert hub.requests == []  # served from the cache: the hub was not asked


def test_pull_of_an_asr_model_by_its_size_name(hub: LocalHub, tmp_path: Path) -> None:
    pulled = admin(hub_env(tmp_path, hub.endpoint), "models", "pull", "asr", "--model", "tiny.en")
    assert pulled.returncode == 0, explain(pulled)
    assert "Systran/faster-whisper-tiny.en: 4 files verified, 4 downloaded" in pulled.stdout, explain(pulled)
    assert "ASR_MODEL=tiny.en" in pulled.stdout


def test_pull_of_a_model_directory_has_nothing_to_do(hub: LocalHub, tmp_path: Path) -> None:
    env = hub_env(tmp_path, hub.endpoint) | {"ASR_MODEL": default_model()}
    hub.requests.clear()
    pulled = admin(env, "models", "pull", "asr")
    assert pulled.returncode == 0, explain(pulled)
    assert "is a model directory: nothing to download" in pulled.stdout
    assert hub.requests == []


def test_pull_without_a_hub_fails_within_seconds_with_the_ways_out(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    pulled = admin(hub_env(tmp_path, f"http://127.0.0.1:{port}"), "models", "pull", "tts", "--model", "1.7B")
    seconds = time.monotonic() - started
    assert pulled.returncode == 1, explain(pulled)
    assert seconds < 15, seconds  # the interpreter's start included; the failure itself is immediate
    message = pulled.stderr
    assert "'Qwen/Qwen3-TTS-12Hz-1.7B-Base' was not downloaded" in message, message
    assert "cannot be reached (Connection refused)" in message
    assert "TTS_MODEL" in message and "make tiny-model" in message
    assert "Traceback" not in message and pulled.stdout == ""
