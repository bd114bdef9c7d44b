"""The model manager: lazy load, status, unload, idle unload, failures a person can act on, shared loads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voice_common.errors import Unavailable
from voice_tts.model_manager import (
    DEFAULT_MODEL,
    ModelManager,
    ModelSpec,
    ModelState,
    resolve_model,
)
from voice_tts.tiny_model import build_tiny_model


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


async def test_missing_hub_model_fails_with_a_way_out() -> None:
    manager = ModelManager(ModelSpec(model="Qwen/Qwen3-TTS-12Hz-0.6B-Base"))
    with pytest.raises(Unavailable) as info:
        async with manager.use():
            pass
    assert manager.status().state is ModelState.FAILED
    assert "TTS_MODEL" in info.value.message and "make tiny-model" in info.value.message


async def test_bad_device_fails_with_the_reason(tiny_dir: Path) -> None:
    manager = ModelManager(ModelSpec(model=str(tiny_dir), device="cuda:3"))
    status = await manager.load()
    assert status.state is ModelState.FAILED
    assert "cuda:3" in status.message


async def test_concurrent_users_share_one_load() -> None:
    calls = 0

    def loader(spec: ModelSpec) -> tuple[Any, str, str]:
        nonlocal calls
        calls += 1
        return object(), "cpu", "float32"

    manager = ModelManager(ModelSpec(model="x"), loader=loader)

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

    manager = ModelManager(ModelSpec(model="a"), loader=loader)
    await manager.load()
    status = await manager.load(ModelSpec(model="b"))
    assert loaded == ["a", "b"] and status.model == "b" and status.state is ModelState.READY
