"""``voice-admin keys create|list|revoke|ensure-local`` as real subprocesses against an embedded data directory
(SQLite, migrated by the first command), and the keys they make verified by the profile service's domain."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from voice_common import api_keys as key_format
from voice_common.config import CommonSettings
from voice_common.db import create_engine, utc_now
from voice_common.errors import Unauthenticated
from voice_profiles.domain.api_keys import ApiKeyRecord, ApiKeys
from voice_profiles.repositories.api_key_repository import ApiKeyDatabase


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_", "PROFILES_"))}
    env.update(VOICE_DATA_DIR=str(data_dir), VOICE_DEFAULT_TENANT="home")
    return env


def _admin(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice_profiles.admin", *args],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args!r}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


async def _verify(data_dir: Path, secret: str) -> ApiKeyRecord:
    engine = create_engine(CommonSettings(data_dir=data_dir).resolved_database_url)
    try:
        return await ApiKeys(ApiKeyDatabase(engine), utc_now).verify(key_format.key_sha256(secret))
    finally:
        await engine.dispose()


async def test_create_list_revoke(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = _ok(
        _admin(
            data_dir,
            *("keys", "create", "--tenant", "acme", "--name", "ci"),
            *("--scope", "tts", "--scope", "profiles:read", "--rps", "3", "--burst", "6", "--ttl-days", "7"),
        )
    )
    secret = created.stdout.strip()
    assert key_format.well_formed(secret) and created.stdout == secret + "\n"
    assert "shown only this once" in created.stderr and secret not in created.stderr
    record = await _verify(data_dir, secret)
    assert record.tenant == "acme" and record.scopes == ("profiles:read", "tts")
    assert record.limits.requests_per_second == 3.0 and record.limits.burst == 6
    assert record.expires_at is not None

    other = _ok(_admin(data_dir, "keys", "create", "--tenant", "beta", "--name", "ops", "--scope", "admin"))
    table = _ok(_admin(data_dir, "keys", "list")).stdout.splitlines()
    assert table[0].split()[:4] == ["PREFIX", "TENANT", "NAME", "SCOPES"]
    assert any(line.startswith(record.prefix) and "acme" in line and "active" in line for line in table[1:])
    assert any(line.startswith(key_format.key_prefix(other.stdout.strip())) for line in table[1:])
    only_acme = json.loads(_ok(_admin(data_dir, "keys", "list", "--tenant", "acme", "--json")).stdout)
    assert [(k["prefix"], k["state"], k["last_used"] is not None) for k in only_acme] == [
        (record.prefix, "active", True)
    ]

    revoked = _ok(_admin(data_dir, "keys", "revoke", record.prefix))
    assert f"revoked API key {record.prefix}" in revoked.stdout
    with pytest.raises(Unauthenticated, match="was revoked at"):
        await _verify(data_dir, secret)
    assert json.loads(_ok(_admin(data_dir, "keys", "list", "--tenant", "acme", "--json")).stdout) == []
    everything = json.loads(_ok(_admin(data_dir, "keys", "list", "--all", "--json")).stdout)
    assert {k["prefix"]: k["state"] for k in everything} == {
        record.prefix: "revoked",
        key_format.key_prefix(other.stdout.strip()): "active",
    }

    unknown = _admin(data_dir, "keys", "revoke", "vk_00000000")
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    bad_name = _admin(data_dir, "keys", "create", "--tenant", "acme", "--name", " ", "--scope", "tts")
    assert bad_name.returncode == 1 and "name must not be empty" in bad_name.stderr and bad_name.stdout == ""
    bad_tenant = _admin(
        data_dir, "keys", "create", "--tenant", "Not A Tenant", "--name", "x", "--scope", "tts"
    )
    assert bad_tenant.returncode == 1 and "--tenant" in bad_tenant.stderr
    bad_scope = _admin(data_dir, "keys", "create", "--tenant", "acme", "--name", "x", "--scope", "root")
    assert bad_scope.returncode != 0 and "root" in bad_scope.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_ensure_local_makes_reuses_and_replaces_the_admin_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key_file = key_format.local_key_path(data_dir)

    first = _ok(_admin(data_dir, "keys", "ensure-local"))
    secret = first.stdout.strip()
    assert key_format.well_formed(secret)
    assert str(key_file) in first.stderr and "0600" in first.stderr
    assert key_file.read_text().strip() == secret and _mode(key_file) == 0o600
    record = await _verify(data_dir, secret)
    assert record.tenant == "home" and record.name == "local admin" and record.scopes == key_format.SCOPES

    second = _ok(_admin(data_dir, "keys", "ensure-local"))
    assert second.stdout.strip() == f"using the admin key in {key_file}" and secret not in second.stderr
    assert key_file.read_text().strip() == secret

    _ok(_admin(data_dir, "keys", "revoke", record.id))
    third = _ok(_admin(data_dir, "keys", "ensure-local"))
    replacement = third.stdout.strip()
    assert key_format.well_formed(replacement) and replacement != secret
    assert "no longer works" in third.stderr and "revoked" in third.stderr
    assert key_file.read_text().strip() == replacement and _mode(key_file) == 0o600
    assert (await _verify(data_dir, replacement)).name == "local admin"
    assert sorted(p.name for p in data_dir.iterdir() if "admin-api-key" in p.name) == ["admin-api-key"]

    key_file.write_text("not a key\n")
    fourth = _ok(_admin(data_dir, "keys", "ensure-local"))
    assert "does not hold a key" in fourth.stderr
    assert key_format.well_formed(key_file.read_text().strip()) and _mode(key_file) == 0o600
