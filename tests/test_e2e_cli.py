"""The ``voice`` command-line client against the real profile-service process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import ServiceProcess, service, service_env
from grpc_health.v1 import health_pb2

from voice_common.audio import decode_audio
from voice_testing.media_files import encode_file, speechlike

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("cli")
    with service(service_env(root / "data"), root) as process:
        process.wait_for(health_pb2.HealthCheckResponse.SERVING)
        yield process


def voice(process: ServiceProcess, *args: str, tenant: str = "cli") -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("voice")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_cli"]
    return subprocess.run(
        [*command, "--target", f"127.0.0.1:{process.port}", "--tenant", tenant, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return json.loads(result.stdout)


def test_profile_sample_download_and_archive_round_trip(running: ServiceProcess, tmp_path: Path) -> None:
    profile = ok(voice(running, "profiles", "create", "Shell voice", "--language", "en"))["profile"]
    recording = tmp_path / "me.m4a"
    recording.write_bytes(encode_file(speechlike(4.0, rate=44100), 44100, "m4a"))
    added = voice(running, "samples", "add", profile["id"], str(recording), "--text", "Hello from the shell.")
    sample = ok(added)["sample"]
    assert sample["fileName"] == "me.m4a" and abs(float(sample["durationSeconds"]) - 4.0) < 0.1
    # The progress bar went to stderr, never into the JSON on stdout.
    assert "upload" in added.stderr or added.stderr == ""

    out = tmp_path / "back.flac"
    result = voice(
        running,
        "samples",
        "audio",
        str(sample["id"]),
        "-o",
        str(out),
        "--encoding",
        "flac",
        "--rate",
        "16000",
    )
    assert result.returncode == 0, result.stderr
    assert "audio/flac" in result.stdout
    assert abs(decode_audio(out.read_bytes(), target_rate=16000).duration_seconds - 4.0) < 0.05

    link = ok(voice(running, "samples", "url", str(sample["id"]), "--original", "--ttl", "60"))
    assert link["url"].startswith("file://") and link["mimeType"] == "audio/mp4"  # guessed from ".m4a"
    assert Path(link["url"].removeprefix("file://")).read_bytes() == recording.read_bytes()

    archive = tmp_path / "shell.voice.tar"
    assert voice(running, "profiles", "export", profile["id"], "-o", str(archive)).returncode == 0
    imported = ok(voice(running, "profiles", "import", str(archive), tenant="cli-elsewhere"))
    assert imported["sampleCount"] == 1
    listed = ok(voice(running, "profiles", "list", tenant="cli-elsewhere"))
    assert [p["name"] for p in listed["profiles"]] == ["Shell voice"]


def test_errors_print_code_and_message_and_exit_1(running: ServiceProcess, tmp_path: Path) -> None:
    result = voice(running, "profiles", "get", "00000000-0000-4000-8000-000000000000")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "not found" in result.stderr
    silent = tmp_path / "silence.wav"
    silent.write_bytes(encode_file(speechlike(3.0, amplitude=0.0), 24000, "wav"))
    profile = ok(voice(running, "profiles", "create", "For silence"))["profile"]
    result = voice(running, "samples", "add", profile["id"], str(silent))
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr and "silent" in result.stderr
    missing = voice(running, "samples", "add", profile["id"], str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
