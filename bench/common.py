"""Shared pieces of the benchmarks: figures and tables, free ports, child processes that always get stopped."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

Op = Literal[">=", "<="]


class BenchError(RuntimeError):
    """The benchmark itself failed (a server did not start, a call failed): not a slow result."""


@dataclass(frozen=True)
class Figure:
    """One reported number with its goal, printed as ``BENCH <name> <value> goal <op> <target> <PASS|MISS>``,
    followed by `` (<details>)`` when there are details."""

    name: str
    value: float
    op: Op
    target: float
    details: str = ""  # printed after the verdict in parentheses: the absolute numbers behind a ratio

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        line = f"BENCH {self.name} {format_value(self.value)} goal {self.op} {format_value(self.target)} {verdict}"
        return f"{line} ({self.details})" if self.details else line


def format_value(value: float) -> str:
    """Three significant digits (two decimals at most below 10), without exponent notation."""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in range(1, len(row)))]
        return "  ".join(parts).rstrip()

    rule = "-" * len(fmt(cells[0]))
    lines = [title, rule, fmt(cells[0]), rule, *(fmt(row) for row in cells[1:]), rule]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return format_value(value)
    return str(value)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bind to port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any VOICE_/PROFILES_ setting of the developer's, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("VOICE_", "PROFILES_", "AWS_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class ManagedProcess:
    """A child process whose output goes to a temporary file (never a pipe nobody drains).

    The child writes in append mode and the parent reads through a file object of its own, so reading the output
    while the child runs never moves the child's write position. ``stop()`` terminates the child (SIGTERM, then
    SIGKILL after ``STOP_TIMEOUT_S``); use it through :func:`managed_process` so that happens whatever goes wrong.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        handle, path = tempfile.mkstemp(prefix=f"bench-{name.replace(' ', '-')}-", suffix=".log")
        os.close(handle)
        self.log_path = Path(path)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=REPO_ROOT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def mark(self) -> int:
        """A position in the output, for :meth:`output_since`."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def output_since(self, mark: int = 0, limit: int = 8000) -> str:
        """The last ``limit`` characters the process wrote to stdout/stderr after ``mark``."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(mark)
                return log.read().decode("utf-8", "replace")[-limit:]
        except OSError:
            return ""

    def output(self, limit: int = 8000) -> str:
        return self.output_since(0, limit) or "<no output>"

    def check_alive(self, doing: str) -> None:
        if not self.alive:
            raise BenchError(
                f"{self.name} (pid {self.pid}) exited with status {self.process.returncode} while {doing}; "
                f"its output:\n{self.output()}"
            )

    def stop(self) -> None:
        try:
            if self.alive:
                self.process.terminate()
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


@contextlib.contextmanager
def managed_process(name: str, argv: Sequence[str], env: Mapping[str, str]) -> Iterator[ManagedProcess]:
    process = ManagedProcess(name, argv, env)
    try:
        yield process
    finally:
        process.stop()


def python_module_argv(module: str, *args: str) -> list[str]:
    """``[<this interpreter>, -m, module, *args]``: children run in the same virtual environment."""
    return [sys.executable, "-m", module, *args]


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = math.nan

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
