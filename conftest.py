"""Fixtures every test suite shares: real servers (PostgreSQL, an S3 API on loopback), started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from voice_common.testing.postgres import postgres_server
from voice_common.testing.s3_server import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One real moto S3 server (subprocess on loopback) for the whole test session."""
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A superuser URL of a real PostgreSQL server (the local one, or a throwaway cluster)."""
    with postgres_server() as url:
        yield url
