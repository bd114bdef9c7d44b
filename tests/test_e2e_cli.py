"""The ``voice`` command-line client through the real gateway, in front of the real profile-service process."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    SERVING,
    ServiceProcess,
    admin,
    create_key,
    explain,
    free_port,
    service,
    service_env,
    start_gateway,
    with_internal_token,
)

from voice_common.audio import decode_audio
from voice_testing.certificates import write_certificates
from voice_testing.media_files import encode_file, speechlike

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    profiles: ServiceProcess
    gateway: ServiceProcess
    env: dict[str, str]
    keys: dict[str, str]  # tenant -> an API key with every scope


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cli")
    # A short key cache, so a revoked key is refused within the test's patience.
    env = with_internal_token(service_env(root / "data", GATEWAY_KEY_CACHE_SECONDS="0.5"))
    keys = {tenant: create_key(env, tenant) for tenant in ("cli", "cli-elsewhere")}
    with service(env, root) as profiles:
        profiles.wait_for(SERVING)
        gateway = start_gateway(env, root)
        try:
            yield Stack(profiles, gateway, env, keys)
        finally:
            gateway.close()


def voice(
    stack: Stack,
    *args: str,
    tenant: str | None = "cli",
    environment: Mapping[str, str] | None = None,
    target: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``voice`` with the key of ``tenant`` (None: no --key, so the CLI looks for one itself) at the gateway."""
    script = Path(sys.executable).with_name("voice")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_cli"]
    if target:
        command += ["--target", f"127.0.0.1:{stack.gateway.port}"]
    if tenant is not None:
        command += ["--key", stack.keys[tenant]]
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOICE_")}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**clean, **(environment or {})},
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return json.loads(result.stdout)


def test_profile_sample_download_and_archive_round_trip(running: Stack, tmp_path: Path) -> None:
    profile = ok(voice(running, "profiles", "create", "Shell voice", "--language", "en", "--json"))["profile"]
    recording = tmp_path / "me.m4a"
    recording.write_bytes(encode_file(speechlike(4.0, rate=44100), 44100, "m4a"))
    added = voice(
        running, "samples", "add", profile["id"], str(recording), "--text", "Hello from the shell.", "--json"
    )
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

    link = ok(voice(running, "samples", "url", str(sample["id"]), "--original", "--ttl", "60", "--json"))
    assert link["url"].startswith("file://") and link["mimeType"] == "audio/mp4"  # guessed from ".m4a"
    assert Path(link["url"].removeprefix("file://")).read_bytes() == recording.read_bytes()

    archive = tmp_path / "shell.voice.tar"
    assert voice(running, "profiles", "export", profile["id"], "-o", str(archive)).returncode == 0
    imported = ok(voice(running, "profiles", "import", str(archive), "--json", tenant="cli-elsewhere"))
    assert imported["sampleCount"] == 1
    listed = ok(voice(running, "profiles", "list", "--json", tenant="cli-elsewhere"))
    assert [p["name"] for p in listed["profiles"]] == ["Shell voice"]


def test_errors_print_code_and_message_and_exit_1(running: Stack, tmp_path: Path) -> None:
    result = voice(running, "profiles", "get", "00000000-0000-4000-8000-000000000000")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "not found" in result.stderr
    silent = tmp_path / "silence.wav"
    silent.write_bytes(encode_file(speechlike(3.0, amplitude=0.0), 24000, "wav"))
    profile = ok(voice(running, "profiles", "create", "For silence", "--json"))["profile"]
    result = voice(running, "samples", "add", profile["id"], str(silent))
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr and "silent" in result.stderr
    missing = voice(running, "samples", "add", profile["id"], str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr


def test_the_key_make_run_saved_is_found_and_decides_the_tenant(running: Stack, tmp_path: Path) -> None:
    ensured = admin(running.env, "keys", "ensure-local")
    assert ensured.returncode == 0, explain(ensured)
    saved = Path(running.env["VOICE_DATA_DIR"]) / "admin-api-key"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    # No --key, no --target: VOICE_DATA_DIR's saved key, and the old VOICE_PROFILES_TARGET name of the address.
    local = {
        "VOICE_DATA_DIR": running.env["VOICE_DATA_DIR"],
        "VOICE_PROFILES_TARGET": f"127.0.0.1:{running.gateway.port}",
    }
    made = ok(
        voice(
            running,
            "profiles",
            "create",
            "Saved-key voice",
            "--json",
            tenant=None,
            environment=local,
            target=False,
        )
    )
    listed = ok(voice(running, "profiles", "list", "--json", tenant=None, environment=local, target=False))
    assert made["profile"]["id"] in [profile["id"] for profile in listed["profiles"]]
    # The saved key acts for the default tenant: another tenant's key does not see its profile.
    theirs = ok(voice(running, "profiles", "list", "--name", "Saved-key", "--json"))
    assert theirs.get("profiles", []) == []
    # VOICE_API_KEY comes before the saved file; VOICE_TARGET before VOICE_PROFILES_TARGET.
    through_env = {
        **local,
        "VOICE_API_KEY": running.keys["cli"],
        "VOICE_TARGET": f"127.0.0.1:{running.gateway.port}",
        "VOICE_PROFILES_TARGET": "127.0.0.1:1",
    }
    assert (
        ok(
            voice(
                running,
                "profiles",
                "list",
                "--name",
                "Saved-key",
                "--json",
                tenant=None,
                environment=through_env,
                target=False,
            )
        ).get("profiles", [])
        == []
    )


def test_without_a_key_the_gateway_refuses_and_the_cli_says_where_it_looked(
    running: Stack, tmp_path: Path
) -> None:
    result = voice(running, "profiles", "list", tenant=None, environment={"VOICE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 4, result.stderr
    assert "UNAUTHENTICATED" in result.stderr
    assert f"none in {tmp_path / 'admin-api-key'}" in result.stderr and "make run" in result.stderr
    wrong = voice(running, "--key", "vk_aaaaaaaa_" + "A" * 43, "profiles", "list", tenant=None)
    assert wrong.returncode == 4 and "UNAUTHENTICATED" in wrong.stderr and "--key" in wrong.stderr


def test_keys_create_list_and_revoke_through_the_gateway(running: Stack) -> None:
    created = ok(
        voice(running, "keys", "create", "reader", "--scope", "profiles:read", "--rps", "5", "--json")
    )
    secret, record = created["secret"], created["apiKey"]
    assert secret.startswith(record["prefix"]) and record["tenant"] == "cli"
    assert record["scopes"] == ["profiles:read"] and record["rateLimits"]["requestsPerSecond"] == 5
    reader = {"VOICE_API_KEY": secret}
    assert voice(running, "profiles", "list", tenant=None, environment=reader).returncode == 0
    denied = voice(running, "profiles", "create", "Not allowed", tenant=None, environment=reader)
    assert denied.returncode == 4 and "PERMISSION_DENIED" in denied.stderr, denied.stderr
    refused = voice(running, "keys", "list", tenant=None, environment=reader)
    assert refused.returncode == 4 and "PERMISSION_DENIED" in refused.stderr

    listed = ok(voice(running, "keys", "list", "--json"))
    assert record["id"] in [key["id"] for key in listed["apiKeys"]]
    assert all(key["tenant"] == "cli" for key in listed["apiKeys"])  # a tenant's admin sees its own keys only
    assert "secret" not in json.dumps(listed)
    revoked = ok(voice(running, "keys", "revoke", record["id"], "--json"))
    assert revoked["apiKey"]["revokeTime"]
    time.sleep(1.0)  # past GATEWAY_KEY_CACHE_SECONDS
    after = voice(running, "profiles", "list", tenant=None, environment=reader)
    assert after.returncode == 4 and "UNAUTHENTICATED" in after.stderr, after.stderr
    assert record["id"] not in [
        key["id"] for key in ok(voice(running, "keys", "list", "--json")).get("apiKeys", [])
    ]
    assert record["id"] in [
        key["id"] for key in ok(voice(running, "keys", "list", "--all", "--json"))["apiKeys"]
    ]


def test_tls_to_a_gateway_with_a_certificate(running: Stack, tmp_path: Path) -> None:
    certificates = write_certificates(tmp_path / "certs")
    env = {
        **running.env,
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_METRICS_PORT": str(free_port()),
        "GATEWAY_HTTP_PORT": str(free_port()),
        "GATEWAY_TLS_CERT_FILE": str(certificates.server_cert),
        "GATEWAY_TLS_KEY_FILE": str(certificates.server_key),
    }
    with contextlib.closing(
        ServiceProcess(env, tmp_path / "logs", module="voice_gateway", prefix="GATEWAY")
    ) as tls:
        address = f"127.0.0.1:{tls.port}"
        deadline = time.monotonic() + 60
        while True:  # health over TLS (the process's own channel is plaintext)
            listed = voice(
                running,
                "--target",
                address,
                "--ca",
                str(certificates.ca),
                "profiles",
                "list",
                "--json",
                target=False,
            )
            if listed.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert listed.returncode == 0, listed.stderr
        ok(listed)
        # The system's CAs do not know the test CA; a plaintext client gets no answer from a TLS port.
        untrusted = voice(running, "--target", address, "--tls", "profiles", "list", target=False)
        assert untrusted.returncode == 3 and "UNAVAILABLE" in untrusted.stderr, untrusted.stderr
        plaintext = voice(running, "--target", address, "profiles", "list", target=False)
        assert plaintext.returncode == 3 and "UNAVAILABLE" in plaintext.stderr, plaintext.stderr
    missing = voice(running, "--ca", str(tmp_path / "nope.pem"), "profiles", "list")
    assert missing.returncode == 2 and "is not a file" in missing.stderr


def test_human_output_by_default_and_profiles_by_name(running: Stack, tmp_path: Path) -> None:
    created = voice(running, "profiles", "create", "Table voice", "--language", "en")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith('created profile "Table voice" (') and "language en" in created.stdout
    recording = tmp_path / "table.wav"
    recording.write_bytes(encode_file(speechlike(3.0), 24000, "wav"))
    # A name where a profile is meant.
    added = voice(running, "samples", "add", "Table voice", str(recording), "--text", "Said for the table.")
    assert added.returncode == 0, added.stderr
    assert (
        'to "Table voice": 3.0 s from table.wav' in added.stdout
        and "text: Said for the table." in added.stdout
    )

    listed = voice(running, "profiles", "list", "--name", "Table")
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "LANGUAGE", "SAMPLES", "AUDIO", "CREATED", "(UTC)", "EXPIRES"]
    # Aligned columns: each value starts where its heading does.
    assert row[header.index("NAME") :].startswith("Table voice") and row[header.index("AUDIO") :].startswith(
        "3.0 s"
    )
    samples = voice(running, "samples", "list", "Table voice").stdout.splitlines()
    assert samples[0].split()[:3] == ["ID", "FILE", "DURATION"] and "table.wav" in samples[1]
    assert "provided" in samples[1] and "Said for the table." in samples[1]
    shown = voice(running, "profiles", "get", "table voice").stdout  # names compare without case
    assert "name:        Table voice" in shown and "samples:     1 (3.0 s)" in shown

    archive = tmp_path / "table.voice.tar"
    exported = voice(running, "export", "Table voice", "-o", str(archive))
    assert exported.returncode == 0 and exported.stdout.startswith(f'{archive}: profile "Table voice", ')
    imported = voice(running, "import", str(archive), "--name", "Table copy")
    assert imported.returncode == 0 and 'imported profile "Table copy"' in imported.stdout, imported.stderr
    assert imported.stdout.rstrip().endswith("with 1 sample")
    gone = voice(running, "profiles", "delete", "Table copy")
    assert gone.returncode == 0 and "1 sample, 0 generations" in gone.stdout
    assert voice(running, "profiles", "list", "--name", "Table copy").stdout.strip() == "no profiles"
    missing = voice(running, "samples", "list", "Nobody by this name")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr

    made = voice(running, "keys", "create", "table", "--scope", "tts")
    lines = made.stdout.splitlines()
    assert lines[0].startswith('created key "table" (') and lines[-1].startswith("vk_"), made.stdout
    keys = voice(running, "keys", "list").stdout.splitlines()
    assert keys[0].split()[:4] == ["ID", "PREFIX", "NAME", "SCOPES"]
    assert any(" table " in line and line.rstrip().endswith("active") for line in keys[1:]), keys
