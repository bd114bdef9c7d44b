"""README.md's tour runs as written, in order, against a platform started as ``make run`` starts it
(client/tests/client_platform.py: the real gateway, profile, TTS with a tiny model, and ASR processes).

What runs, by one rule: in the section "A short tour", every line of a ```sh block that calls ``.venv/bin/voice``
(a pipe into it included; a line ending in ``\\`` continues on the next), run by bash with ``pipefail``, and every
```python block, run by this venv's Python. Other ```sh lines call tools ``make setup`` does not install (grpcurl,
jq); the README says so where it shows them. The examples run in a fresh directory holding what they name:
``recording.wav`` and ``recording.m4a`` (a spoken sentence), ``.venv/bin/voice`` (this venv's), and
``data/admin-api-key`` (a key with every scope of a tenant of its own, where ``make run`` saves its key). Only the
addresses differ from a ``make run`` machine: ``VOICE_TARGET`` names the test gateway's gRPC port, and
``OPENAI_BASE_URL`` (with ``OPENAI_API_KEY``, the same key: the official openai client reads both) its HTTP face.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client" / "tests"))

from client_platform import Platform, running_platform
from e2e_support import create_key

from voice_common.audio import decode_audio
from voice_testing.media_files import encode_file
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"
TOUR = "## A short tour"
CLI = ".venv/bin/voice"


@dataclass(frozen=True)
class Example:
    kind: str  # "sh" (one command line) or "python" (a whole block)
    text: str


def tour_examples(readme: str) -> list[Example]:
    """The tour's runnable examples in the order the README shows them."""
    start = readme.index(TOUR)
    end = readme.find("\n## ", start + len(TOUR))
    section = readme[start : end if end >= 0 else len(readme)]
    found: list[Example] = []
    for language, body in re.findall(r"```(sh|python)\n(.*?)```", section, re.DOTALL):
        if language == "python":
            found.append(Example("python", body))
            continue
        for line in re.sub(r"\\\n", " ", body).splitlines():
            if re.search(r"(^|\|)\s*" + re.escape(CLI) + r"\b", line):
                found.append(Example("sh", line))
    return found


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("readme")) as started:
        yield started


def test_the_tour_shows_the_cli_and_the_client() -> None:
    examples = tour_examples(README.read_text())
    commands = " ".join(example.text for example in examples if example.kind == "sh")
    for command in (
        "clone",
        "say",
        "transcribe",
        "profiles",
        "samples",
        "history",
        "export",
        "models",
        "keys",
    ):
        assert f"{CLI} {command} " in commands
    assert any(example.kind == "python" for example in examples)
    # Names, not placeholders a reader would have to fill in (a comment may still mention one).
    assert not [example.text for example in examples if re.search(r"<[a-z-]+>", example.text.split("#")[0])]


def test_every_example_runs_as_written(platform: Platform, tmp_path: Path) -> None:
    spoken = speech_wav(SENTENCES[4], "slt")
    (tmp_path / "recording.wav").write_bytes(spoken)
    decoded = decode_audio(spoken, target_rate=16000)
    (tmp_path / "recording.m4a").write_bytes(encode_file(decoded.samples, 16000, "m4a"))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "voice").symlink_to(Path(sys.executable).with_name("voice"))
    key_file = tmp_path / "data" / "admin-api-key"
    key_file.parent.mkdir()
    key_file.write_text(create_key(platform.env, "readme") + "\n")
    key_file.chmod(0o600)
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOICE_")}
    env = {
        **clean,
        "VOICE_TARGET": platform.target,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{platform.env['GATEWAY_HTTP_PORT']}/v1",
        "OPENAI_API_KEY": key_file.read_text().strip(),
    }

    examples = tour_examples(README.read_text())
    for number, example in enumerate(examples, start=1):
        command = (
            ["bash", "-e", "-o", "pipefail", "-c", example.text]
            if example.kind == "sh"
            else [sys.executable, "-c", example.text]
        )
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, (
            f"README tour example {number} failed (exit {result.returncode}):\n{example.text}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    written = {path.name for path in tmp_path.iterdir()}
    assert {"first.wav", "hello.mp3", "spoken.wav", "announcer.voice.tar", "hello.wav"} <= written
    assert (tmp_path / "spoken.wav").read_bytes()[:4] == b"RIFF"
