"""Importing the TTS service (and with it qwen_tts) prints nothing: the banners qwen_tts's import prints (flash-attn's
box, the shell's "sox: not found", sox's warning) become one DEBUG log line (voice_tts.qwen). Each test imports in
a fresh interpreter, since the import happens once per process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

_KEEP_RECORDS = """
import json, logging, sys
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage(), getattr(record, "output", "")])
logger = logging.getLogger("voice_tts.qwen")
logger.addHandler(Keep())
logger.setLevel(logging.DEBUG)
import voice_tts.qwen
print(json.dumps(records))
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_importing_the_tts_service_prints_nothing() -> None:
    result = _python("import voice_tts.app, tools.tiny_model")
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_what_the_import_printed_is_one_debug_line() -> None:
    result = _python(_KEEP_RECORDS)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    records = json.loads(result.stdout)
    assert len(records) <= 1 and all(level == "DEBUG" for level, _, _ in records), records
    if shutil.which("sox") is None:
        # The shell's complaint comes from a child process: caught only because the descriptors were redirected.
        [(_, message, output)] = records
        assert message == "importing qwen_tts printed" and "sox: not found" in output, records
