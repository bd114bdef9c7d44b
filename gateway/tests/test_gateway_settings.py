"""``python -m voice_gateway`` refuses bad settings at start: exit code 2 and a line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GATEWAY_", "VOICE_"))}
    env.update(
        {
            "VOICE_DATA_DIR": str(tmp_path),
            "GATEWAY_PORT": "0",
            "GATEWAY_METRICS_PORT": "0",
            "GATEWAY_HTTP_PORT": "0",
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "voice_gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_stop_the_gateway_naming_the_variable(tmp_path: Path) -> None:
    result = start(tmp_path, GATEWAY_TLS_CERT_FILE=str(tmp_path / "missing.pem"))
    assert result.returncode == 2, result.stderr
    assert "GATEWAY_TLS_CERT_FILE" in result.stderr and "missing.pem" in result.stderr
    assert "Traceback" not in result.stderr
    certificate = tmp_path / "cert.pem"
    certificate.write_text("x")
    result = start(tmp_path, GATEWAY_TLS_CERT_FILE=str(certificate))
    assert result.returncode == 2 and "GATEWAY_TLS_KEY_FILE" in result.stderr, result.stderr
    result = start(tmp_path, GATEWAY_AUTHENTICATION="none")
    assert result.returncode == 2 and "GATEWAY_AUTHENTICATION" in result.stderr, result.stderr
    result = start(tmp_path, GATEWAY_METRIC_TENANTS='["Not A Tenant"]')
    assert result.returncode == 2 and "GATEWAY_METRIC_TENANTS" in result.stderr, result.stderr
