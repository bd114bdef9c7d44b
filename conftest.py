"""Fixtures every test suite shares: real servers (PostgreSQL, an S3 API on loopback), started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Whisper's int8 matrix products go through oneMKL, which picks its kernels by CPU: AMX on Sapphire Rapids and
# later Xeons, AVX-512 before them. The two round differently, and tiny.en then hears a borderline word differently
# (measured on 31 clips: WER 0.046 with AMX, 0.054 AVX-512, 0.047 AVX2, so neither is better). Capping MKL at
# AVX-512 gives the accuracy assertions the same numerics on every test machine; set before CTranslate2 loads MKL,
# and inherited by the service processes the end-to-end tests start. Deployments keep MKL's own choice.
os.environ.setdefault("MKL_ENABLE_INSTRUCTIONS", "AVX512")

# gRPC's fork handlers run gRPC code in a forked child, and with calls in flight on other threads that child can
# crash before it execs (measured: 95 of 300 children killed by SIGSEGV). The tests fork while gRPC runs whenever
# they start PostgreSQL as another user (subprocess cannot vfork to switch user); no test process forks to keep
# using gRPC in the child, so the handlers are switched off. Read when gRPC initialises, so set before any import.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from voice_testing.postgres import postgres_server
from voice_testing.s3_server import MotoServer


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
