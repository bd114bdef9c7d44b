"""Fixtures shared by the TTS tests: the tiny model, built offline, and torch on one thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tools.tiny_model import build_tiny_model


def _no_network(*_args: object, **_kwargs: object) -> None:
    raise OSError("network access is disabled in this test")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random-weight Qwen3-TTS; Python sockets are closed while the module's tests use it (no hub calls)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _no_network)
        yield build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen3-tts", seed=0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: tests share two cores with servers, and spinning workers made generation 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
