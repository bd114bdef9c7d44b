"""Profile-service fixtures, on both configurations: SQLite + filesystem, and PostgreSQL + S3 (moto) on loopback.

One server per configuration serves the whole session; each test works in a tenant of its own, which keeps
tests independent and exercises tenant isolation all the time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from profiles_harness import Harness, start_harness

from voice_common.config import CommonSettings
from voice_testing.postgres import fresh_database
from voice_testing.s3_server import MotoServer, unique_bucket_name

BACKENDS = ["sqlite-fs", "postgres-s3"]


@pytest.fixture(scope="session", params=BACKENDS)
def common_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CommonSettings]:
    data_dir: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite-fs":
        yield CommonSettings(data_dir=data_dir, log_format="text")
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    moto: MotoServer = request.getfixturevalue("moto_server")
    with fresh_database(admin_url) as database_url:
        yield CommonSettings(
            data_dir=data_dir,
            database_url=database_url,
            s3_endpoint=moto.endpoint,
            s3_access_key=moto.access_key,
            s3_secret_key=moto.secret_key,
            s3_bucket=unique_bucket_name(),
            log_format="text",
        )


@pytest.fixture(scope="session")
async def harness(common_settings: CommonSettings) -> AsyncIterator[Harness]:
    harness = await start_harness(common_settings)
    yield harness
    await harness.close()
    await harness.app.close()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_harness(common_settings: CommonSettings) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """Start extra servers on the same database and store, e.g. with a faulty store or a fake clock."""
    started: list[tuple[Harness, bool]] = []

    async def make(**kwargs: Any) -> Harness:
        harness = await start_harness(common_settings, **kwargs)
        started.append((harness, "store" in kwargs))
        return harness

    yield make
    for harness, borrowed_store in started:
        await harness.close()
        if borrowed_store:
            await harness.app.database.close()  # the store belongs to the session's harness
        else:
            await harness.app.close()
