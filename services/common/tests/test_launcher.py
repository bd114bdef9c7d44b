"""``make run``'s supervisor with real child processes and a clock the test moves (no sleeping on back-offs)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from voice_common.launcher import Child, Supervisor


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_exit(child: Child) -> int:
    assert child.process is not None
    return child.process.wait(timeout=10)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_child_that_dies_is_restarted_after_a_back_off_that_doubles(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    child = Child("flaky", python("import sys; sys.exit(3)"))
    supervisor = Supervisor([child], os.environ, clock=clock, first_delay=1.0, max_delay=4.0)
    supervisor.start_all()
    first_pid = child.process.pid if child.process else None
    waits = []
    for _ in range(4):
        wait_exit(child)
        supervisor.check_once()  # notices the exit
        assert child.process is None and child.restart_at is not None
        waits.append(child.restart_at - clock.now)
        supervisor.check_once()  # the back-off is not over: nothing starts
        assert child.process is None
        clock.now = child.restart_at
        supervisor.check_once()
        assert child.process is not None
    assert waits == [1.0, 2.0, 4.0, 4.0]  # doubling, capped
    assert child.process is not None and child.restarts == 4 and child.process.pid != first_pid
    wait_exit(child)
    log = capsys.readouterr().err
    assert "[launcher] flaky exited with code 3 after 0.0 s; restarting it in 1 s" in log
    assert "[launcher] restarted (restart 1) flaky" in log


def test_a_child_that_stayed_up_restarts_after_the_shortest_wait() -> None:
    clock = Clock()
    child = Child("steady", python("import sys; sys.exit(0)"))
    supervisor = Supervisor([child], os.environ, clock=clock, first_delay=1.0, stable_seconds=60.0)
    supervisor.start_all()
    for _ in range(3):  # a crash loop: the wait grows to 8 s
        wait_exit(child)
        supervisor.check_once()
        assert child.restart_at is not None
        clock.now = child.restart_at
        supervisor.check_once()
    wait_exit(child)
    clock.now += 120.0  # this run lasted two minutes before it ended
    supervisor.check_once()
    assert child.restart_at == clock.now + 1.0


def test_a_killed_child_is_named_by_its_signal_and_the_others_keep_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    victim = Child("victim", python("import time; time.sleep(60)"))
    bystander = Child("bystander", python("import time; time.sleep(60)"))
    supervisor = Supervisor([victim, bystander], os.environ, clock=clock)
    supervisor.start_all()
    try:
        assert victim.process is not None and bystander.process is not None
        victim.process.kill()
        wait_exit(victim)
        supervisor.check_once()
        assert "victim was killed by SIGKILL" in capsys.readouterr().err
        assert bystander.process.poll() is None
    finally:
        supervisor.stop_all(drain_seconds=10)
    assert bystander.process is not None and bystander.process.returncode is not None


def handles_sigterm(ready: Path, handler: str) -> list[str]:
    """A child that installs ``handler`` for SIGTERM, then says so by creating ``ready``, then sleeps."""
    return python(
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, {handler})\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n"
    )


def wait_ready(ready: Path) -> None:
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the child never installed its SIGTERM handler"
        time.sleep(0.05)


def test_stopping_sends_sigterm_and_waits_for_the_drain(tmp_path: Path) -> None:
    child = Child("drains", handles_sigterm(tmp_path / "ready", "lambda *_: sys.exit(0)"))
    supervisor = Supervisor([child], os.environ)
    supervisor.start_all()
    wait_ready(tmp_path / "ready")
    started = time.monotonic()
    assert supervisor.stop_all(drain_seconds=10) == 0
    assert time.monotonic() - started < 10
    supervisor.stopping = True
    supervisor.check_once()  # a stopping supervisor restarts nothing
    assert child.process is not None and child.process.returncode == 0 and child.restarts == 0


def test_a_child_that_ignores_sigterm_is_killed_after_the_drain_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child = Child("stubborn", handles_sigterm(tmp_path / "ready", "signal.SIG_IGN"))
    supervisor = Supervisor([child], os.environ)
    supervisor.start_all()
    wait_ready(tmp_path / "ready")
    assert supervisor.stop_all(drain_seconds=0.5) == 1
    assert "stubborn did not drain in 0.5 s; killing it" in capsys.readouterr().err
