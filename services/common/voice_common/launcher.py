"""``make run``: start every service of the platform on loopback, keep them running, stop them together on Ctrl-C.

Each service runs in its own process (as in a cluster), with the environment of this one. A service whose
package is not installed is skipped with a note, so the platform grows by adding lines to SERVICES.

The launcher supervises, as a cluster would: a service that dies (a crash, ``kill -9``, an operator's SIGTERM to that
one process) is started again after a back-off, with a log line saying why and when; the others keep serving. The
back-off doubles while a service keeps dying soon after starting (a bad setting, a port taken), so a crash loop
costs little and stays visible in the log, and starts again from the shortest wait once the service has stayed up.
Only Ctrl-C or SIGTERM to the launcher stops everything: each service is sent SIGTERM and drains.

Before the first start it prepares what the services share (docs/gateway.md): the internal credential (a fresh
``VOICE_INTERNAL_TOKEN`` per run, unless the environment brings a token or mutual-TLS files), so the services accept
calls only from the gateway and each other; and the local admin API key (``voice-admin keys ensure-local``: created
and printed once, then kept in ``<data dir>/admin-api-key`` with mode 0600, where the ``voice`` CLI finds it).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

# (name, Python module), in start order.
SERVICES: list[tuple[str, str]] = [
    ("profiles", "voice_profiles"),
    ("tts", "voice_tts"),
    ("asr", "voice_asr"),
    # Last: the public entry opens once the services behind it are starting (it reconnects to any that is late).
    ("gateway", "voice_gateway"),
]
FIRST_RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 30.0
# A service that ran at least this long before dying was healthy: its next restart waits the shortest delay again.
STABLE_SECONDS = 60.0
DRAIN_SECONDS = 30.0
POLL_SECONDS = 0.2


def say(message: str) -> None:
    print(f"[launcher] {message}", file=sys.stderr, flush=True)


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    """One supervised service: its command, its current process (None while waiting to restart) and back-off."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = FIRST_RESTART_DELAY_SECONDS
    restart_at: float | None = None  # when the next start is due, while the service is down


class Supervisor:
    def __init__(
        self,
        children: list[Child],
        env: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
        first_delay: float = FIRST_RESTART_DELAY_SECONDS,
        max_delay: float = MAX_RESTART_DELAY_SECONDS,
        stable_seconds: float = STABLE_SECONDS,
    ) -> None:
        self._children = children
        self._env = dict(env)
        self._clock = clock
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._stable = stable_seconds
        self.stopping = False

    def start_all(self) -> None:
        for child in self._children:
            self._start(child)

    def _start(self, child: Child) -> None:
        child.process = subprocess.Popen(child.args, env=self._env)
        child.started_at = self._clock()
        child.restart_at = None
        verb = "started" if child.restarts == 0 else f"restarted (restart {child.restarts})"
        say(f"{verb} {child.name} (pid {child.process.pid})")

    def check_once(self) -> None:
        """Notice services that died and start those whose back-off is over."""
        now = self._clock()
        for child in self._children:
            if self.stopping:
                return
            process = child.process
            if process is not None and process.poll() is not None:
                child.process = None
                ran = now - child.started_at
                if ran >= self._stable:
                    child.delay = self._first_delay
                child.restart_at = now + child.delay
                say(
                    f"{child.name} {how_it_ended(process.returncode)} after {ran:.1f} s; "
                    f"restarting it in {child.delay:g} s (Ctrl-C stops everything)"
                )
                child.delay = min(child.delay * 2, self._max_delay)
            elif process is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._start(child)

    def stop_all(self, drain_seconds: float = DRAIN_SECONDS) -> int:
        """SIGTERM to every running service, wait for them to drain (kill what does not); 0 when all stopped
        cleanly."""
        running = [child for child in self._children if child.process is not None]
        for child in running:
            assert child.process is not None
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        exit_code = 0
        for child in running:
            assert child.process is not None
            try:
                code = child.process.wait(timeout=drain_seconds)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not drain in {drain_seconds:g} s; killing it")
                child.process.kill()
                code = child.process.wait()
            if code != 0:
                say(f"{child.name} stopped: it {how_it_ended(code)}")
                exit_code = 1
        return exit_code


def with_internal_credential(env: dict[str, str]) -> None:
    """A token shared by this run's services, unless the operator configured a credential of their own."""
    if env.get("VOICE_INTERNAL_TOKEN") or any(
        value for name, value in env.items() if name.startswith("VOICE_INTERNAL_TLS_")
    ):
        say("using the internal credential from the environment")
        return
    # Per run and never written anywhere: it lives exactly as long as the processes that share it.
    env["VOICE_INTERNAL_TOKEN"] = secrets.token_urlsafe(32)


def ensure_local_admin_key(env: Mapping[str, str]) -> bool:
    """``voice-admin keys ensure-local``: the admin key for the CLI and grpcurl, printed on its first creation only.
    False when it failed (the services still start: keys can be made later with ``voice-admin keys create``)."""
    if env.get("GATEWAY_AUTHENTICATION", "").strip().lower() == "off":
        say("GATEWAY_AUTHENTICATION=off: no API key needed, none created")
        return True
    if importlib.util.find_spec("voice_profiles") is None:
        return True
    result = subprocess.run(
        [sys.executable, "-m", "voice_profiles.admin", "keys", "ensure-local"],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        say(f"voice-admin keys ensure-local {how_it_ended(result.returncode)}; no local admin key this run")
        return False
    return True


def main() -> int:
    env = dict(os.environ)
    env.setdefault("VOICE_LOG_FORMAT", "text")
    with_internal_credential(env)
    ensure_local_admin_key(env)
    children = []
    for name, module in SERVICES:
        if importlib.util.find_spec(module) is None:
            say(f"{name}: package {module} is not installed, skipped")
            continue
        children.append(Child(name, [sys.executable, "-m", module]))
    supervisor = Supervisor(children, env)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        supervisor.stopping = True

    # Installed before the first child starts: a Ctrl-C at any moment stops the platform, never half of it.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    supervisor.start_all()
    while not supervisor.stopping:
        supervisor.check_once()
        time.sleep(POLL_SECONDS)
    exit_code = supervisor.stop_all()
    say("all services stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
