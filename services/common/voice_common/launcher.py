"""``make run``: start every service of the platform on loopback and stop them together on Ctrl-C.

Each service runs in its own process (as in a cluster), with the environment of this one. A service whose
package is not installed is skipped with a note, so the platform grows by adding lines to SERVICES.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from types import FrameType

# (name, Python module), in start order.
SERVICES: list[tuple[str, str]] = [
    ("profiles", "voice_profiles"),
    ("tts", "voice_tts"),
    ("asr", "voice_asr"),
]


def main() -> int:
    processes: list[tuple[str, subprocess.Popen[bytes]]] = []
    env = dict(os.environ)
    env.setdefault("VOICE_LOG_FORMAT", "text")
    for name, module in SERVICES:
        if importlib.util.find_spec(module) is None:
            print(f"[launcher] {name}: package {module} is not installed, skipped", file=sys.stderr)
            continue
        processes.append((name, subprocess.Popen([sys.executable, "-m", module], env=env)))
        print(f"[launcher] started {name} (pid {processes[-1][1].pid})", file=sys.stderr)

    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, process in processes:
            if process.poll() is not None:
                print(
                    f"[launcher] {name} exited with {process.returncode}; stopping the others",
                    file=sys.stderr,
                )
                exit_code = process.returncode or 1
                stopping = True
        time.sleep(0.2)
    for _, process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for name, process in processes:
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"[launcher] {name} did not drain in 30 s; killing it", file=sys.stderr)
            process.kill()
            code = process.wait()
        if code != 0:
            print(f"[launcher] {name} stopped with exit code {code}", file=sys.stderr)
            exit_code = exit_code or 1
    print("[launcher] all services stopped", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
