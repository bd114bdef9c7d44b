"""The model manager: lazy load, status, unload, idle unload, failures a person can act on, shared loads, and the
cheap availability check readiness uses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tools.tiny_model import build_tiny_model
from voice_common.errors import FailedPrecondition, NotFound, Unavailable
from voice_common.model_download import hub_cache_dir
from voice_common.model_manager import ModelProblem
from voice_tts.model_manager import (
    DEFAULT_MODEL,
    ModelManager,
    ModelSpec,
    ModelState,
    check_available,
    resolve_model,
)


def _no_files_needed(spec: ModelSpec) -> ModelProblem | None:
    """The availability check that goes with a test loader, which reads no files."""
    return None


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3-tts")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sizes_name_the_base_models() -> None:
    assert resolve_model("0.6B") == DEFAULT_MODEL
    assert resolve_model("1.7b") == "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
    assert resolve_model("/models/mine") == "/models/mine"


async def test_lazy_load_of_a_model_directory_on_cpu(tiny_dir: Path) -> None:
    manager = ModelManager(ModelSpec(model=str(tiny_dir)))
    assert manager.status().state is ModelState.NOT_LOADED
    async with manager.use() as model:
        assert model.model.tts_model_type == "base"
    status = manager.status()
    assert status.state is ModelState.READY
    assert (status.device, status.dtype, status.gpu_memory_bytes) == ("cpu", "float32", 0)
    assert status.load_seconds > 0
    await manager.unload()
    assert manager.status().state is ModelState.NOT_LOADED


async def test_missing_hub_model_fails_with_a_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, whatever this machine has
    manager = ModelManager(ModelSpec(model="Qwen/Qwen3-TTS-12Hz-0.6B-Base"))
    with pytest.raises(Unavailable) as info:
        async with manager.use():
            pass
    assert manager.status().state is ModelState.FAILED
    assert "TTS_MODEL" in info.value.message and "make tiny-model" in info.value.message


async def test_bad_device_fails_with_the_reason(tiny_dir: Path) -> None:
    manager = ModelManager(ModelSpec(model=str(tiny_dir), device="cuda:3"))
    with pytest.raises(FailedPrecondition) as info:
        await manager.load()
    status = manager.status()
    assert status.state is ModelState.FAILED
    assert "cuda:3" in status.message and info.value.message == status.message


async def test_concurrent_users_share_one_load() -> None:
    calls = 0

    def loader(spec: ModelSpec) -> tuple[Any, str, str]:
        nonlocal calls
        calls += 1
        return object(), "cpu", "float32"

    manager = ModelManager(ModelSpec(model="x"), loader=loader, check=_no_files_needed)

    async def use() -> None:
        async with manager.use():
            await asyncio.sleep(0)

    await asyncio.gather(*(use() for _ in range(8)))
    assert calls == 1


async def test_idle_model_is_unloaded_but_not_while_in_use() -> None:
    clock = Clock()
    manager = ModelManager(
        ModelSpec(model="x"),
        idle_unload_seconds=60,
        loader=lambda spec: (object(), "cpu", "float32"),
        check=_no_files_needed,
        clock=clock,
    )
    async with manager.use():
        clock.now += 120
        assert not await manager.unload_if_idle()  # a request holds it
    clock.now += 59
    assert not await manager.unload_if_idle()
    clock.now += 2
    assert await manager.unload_if_idle()
    assert manager.state is ModelState.NOT_LOADED


async def test_loading_another_model_replaces_the_first() -> None:
    loaded: list[str] = []

    def loader(spec: ModelSpec) -> tuple[Any, str, str]:
        loaded.append(spec.model)
        return object(), "cpu", "float32"

    manager = ModelManager(ModelSpec(model="a"), loader=loader, check=_no_files_needed)
    await manager.load()
    status = await manager.load(ModelSpec(model="b"))
    assert loaded == ["a", "b"] and status.model == "b" and status.state is ModelState.READY


def _way_out(problem: ModelProblem | str | None) -> str:
    assert problem is not None
    message = problem if isinstance(problem, str) else problem.message
    assert "TTS_MODEL" in message and "make tiny-model" in message and "models/tiny-qwen3-tts" in message
    return message


def _cache_hub_model(cache: Path, repo_id: str, files: tuple[str, ...]) -> None:
    """The layout huggingface_hub writes: refs/main names a snapshot that holds the files."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name in files:
        path = folder / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_a_model_directory_is_available_when_it_holds_a_checkpoint(tiny_dir: Path, tmp_path: Path) -> None:
    assert check_available(ModelSpec(model=str(tiny_dir))) is None
    missing = check_available(ModelSpec(model=str(tmp_path / "nowhere")))
    assert "does not exist" in _way_out(missing)
    assert missing is not None and missing.nothing_there
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    half = check_available(ModelSpec(model=str(tmp_path / "half")))
    assert "speech_tokenizer/config.json" in _way_out(half)
    assert half is not None and not half.nothing_there  # something is there: not a model
    _way_out(check_available(ModelSpec(model=str(tmp_path / "half" / "config.json"))))


def test_a_hub_id_is_available_only_from_the_local_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    spec = ModelSpec(model="0.6B")  # a size names the hub id
    message = _way_out(check_available(spec, cache_dir=cache))
    assert DEFAULT_MODEL in message and str(cache) in message
    assert check_available(ModelSpec(model="0.6B", allow_download=True), cache_dir=cache) is None

    _cache_hub_model(cache, DEFAULT_MODEL, ("config.json",))
    _way_out(check_available(spec, cache_dir=cache))  # no speech tokenizer: from_pretrained would fail
    _cache_hub_model(tmp_path / "full", DEFAULT_MODEL, ("config.json", "speech_tokenizer/config.json"))
    assert check_available(spec, cache_dir=tmp_path / "full") is None


def test_the_hub_cache_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"
    _cache_hub_model(tmp_path / "cache", "Org/Model", ("config.json", "speech_tokenizer/config.json"))
    assert check_available(ModelSpec(model="Org/Model")) is None


async def test_an_unavailable_model_fails_without_trying_to_load(tmp_path: Path) -> None:
    calls: list[str] = []

    def loader(spec: ModelSpec) -> tuple[Any, str, str]:
        calls.append(spec.model)
        return object(), "cpu", "float32"

    manager = ModelManager(ModelSpec(model=str(tmp_path / "nowhere")), loader=loader)
    problem = manager.problem()
    _way_out(problem)
    assert manager.state is ModelState.NOT_LOADED  # asking loads nothing
    with pytest.raises(NotFound) as info:
        await manager.load()
    status = manager.status()
    assert status.state is ModelState.FAILED and status.message == problem == info.value.message
    assert calls == []
    assert manager.problem() == problem


async def test_a_load_sets_the_load_time_metric(tiny_dir: Path) -> None:
    ready_before = REGISTRY.get_sample_value("voice_tts_model_loads_total", {"result": "ready"}) or 0.0
    manager = ModelManager(ModelSpec(model=str(tiny_dir)))
    assert manager.problem() is None
    status = await manager.load()
    assert manager.problem() is None
    assert REGISTRY.get_sample_value("voice_tts_model_load_seconds") == status.load_seconds > 0
    assert REGISTRY.get_sample_value("voice_tts_model_loads_total", {"result": "ready"}) == ready_before + 1
    await manager.unload()
