"""A real PostgreSQL server for tests: the local one if it answers, else a throwaway cluster.

``VOICE_TEST_POSTGRES_URL`` (a psycopg URL of a superuser, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
picks a server explicitly. Each test session gets its own database, dropped at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl as the postgres user in a temporary directory (about a second)."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise RuntimeError("no PostgreSQL server binaries found (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    root = tempfile.mkdtemp(prefix="voice-pg-")
    shutil.chown(root, "postgres", "postgres")
    data = os.path.join(root, "data")
    port = _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_postgres,
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-w",
            "-l",
            os.path.join(root, "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser URL of a running server."""
    explicit = os.environ.get("VOICE_TEST_POSTGRES_URL")
    if explicit:
        if not _answers(explicit):
            raise RuntimeError(f"VOICE_TEST_POSTGRES_URL={explicit} does not answer")
        yield explicit
    elif _answers(LOCAL_URL):
        yield LOCAL_URL
    else:
        with throwaway_cluster() as url:
            yield url


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database; yields its SQLAlchemy URL (psycopg 3 driver)."""
    name = f"voice_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
