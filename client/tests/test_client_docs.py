"""docs/client.md's examples run as written: each ```python block in turn, in a directory holding the
``recording.wav`` the page asks for, with the address and a key of a tenant of their own in VOICE_TARGET and
VOICE_API_KEY (so the page's "Narrator" meets no other test's profiles)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from client_platform import Platform
from e2e_support import create_key  # on the path client_platform sets

from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow
PAGE = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def test_the_page_has_examples_of_every_part() -> None:
    text = "\n".join(examples())
    for call in ("samples.upload", "tts.stream", "tts.duplex", "asr.live", "keys.create", "AsyncVoiceClient"):
        assert call in text


def test_every_example_runs_as_written(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "recording.wav").write_bytes(speech_wav(SENTENCES[4], "slt"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOICE_TARGET", platform.target)
    monkeypatch.setenv("VOICE_API_KEY", create_key(platform.env, "docs"))
    monkeypatch.delenv("VOICE_DATA_DIR", raising=False)
    for number, block in enumerate(examples(), start=1):
        try:
            exec(compile(block, f"{PAGE.name} example {number}", "exec"), {"__name__": "__main__"})
        except Exception as error:
            raise AssertionError(f"example {number} failed:\n{block}") from error
    printed = capsys.readouterr().out
    assert "final:" in printed and "retrying" not in printed
    assert {"hello.wav", "sample.flac", "kept.mp3", "story.mp3", "async.mp3"} <= set(os.listdir(tmp_path))
