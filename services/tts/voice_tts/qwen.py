"""qwen_tts, imported once without the banners its import prints; every voice_tts module takes its names from here.

Importing qwen_tts imports its 25 Hz tokenizer, which the 12 Hz models this platform loads never use, and that
prints three things straight to the console, outside any logging:

* a box saying flash-attn is not installed (a ``print`` to stdout; it concerns only that tokenizer's encoder: the
  12 Hz models' attention is transformers', chosen by ``TTS_ATTN_IMPLEMENTATION``);
* ``/bin/sh: 1: sox: not found``: the ``sox`` package runs ``sox -h`` through a shell at its import, and the
  shell's complaint goes to the process's stderr (file descriptor 2);
* the ``sox`` package's multi-line warning to install SoX, through its logger.

SoX is not needed by anything the platform does (audio is decoded and resampled by PyAV and soxr), so none of this
may tell an operator to install anything. The import runs with file descriptors 1 and 2 pointed at a temporary
file (the shell is a child process, so only the descriptors reach what it writes), and what was captured becomes
one DEBUG log line. The import happens once per process, before the service serves (``python -m voice_tts`` opens
its app, which imports this, before the server starts), so no other output is caught in the window.

Loading a model then logs, at INFO, six "talker_config is None. Initializing ... with default values" lines from
qwen_tts's config classes (transformers builds default configs to compare against): its loggers start at WARNING.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

log = logging.getLogger(__name__)


@contextmanager
def _console_to_debug_log(what: str) -> Iterator[None]:
    """Whatever is written to stdout and stderr inside the block, by Python or a child process, becomes one DEBUG
    log line instead."""
    with tempfile.TemporaryFile() as captured:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            # Python's buffers hold what was printed but not yet written: into the capture, not after it.
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        captured.seek(0)
        text = captured.read().decode(errors="replace").strip()
    if text:
        log.debug(f"{what} printed", extra={"output": " | ".join(line.strip() for line in text.splitlines())})


def _import_quietly() -> ModuleType:
    if "qwen_tts" in sys.modules:
        return sys.modules["qwen_tts"]
    with _console_to_debug_log("importing qwen_tts"):
        return importlib.import_module("qwen_tts")


qwen_tts = _import_quietly()
logging.getLogger("qwen_tts").setLevel(logging.WARNING)
Qwen3TTSModel = qwen_tts.Qwen3TTSModel
VoiceClonePromptItem = qwen_tts.VoiceClonePromptItem
