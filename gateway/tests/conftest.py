"""Gateway fixtures: a real profile service behind a real gateway, on SQLite + files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gateway_harness import BackendRecorder, Stack, start_stack

from voice_common.config import CommonSettings


@pytest.fixture(scope="session")
def gateway_common(tmp_path_factory: pytest.TempPathFactory) -> CommonSettings:
    data_dir: Path = tmp_path_factory.mktemp("gateway-data")
    return CommonSettings(data_dir=data_dir, _env_file=None)


@pytest.fixture(scope="session")
def recorder() -> BackendRecorder:
    return BackendRecorder()


@pytest.fixture(scope="session")
async def stack(gateway_common: CommonSettings, recorder: BackendRecorder) -> AsyncIterator[Stack]:
    started = await start_stack(gateway_common, recorder=recorder)
    yield started
    await started.close()
