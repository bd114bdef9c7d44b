"""Settings shared by every service (environment variables with the ``VOICE_`` prefix).

Each service adds its own class with its own prefix (``PROFILES_``, ``TTS_``, ...). Settings are built once in
the service's ``__main__`` and passed down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOICE_", extra="ignore")

    data_dir: Path = Field(
        Path("data"), description="Where the embedded mode keeps its SQLite file and objects."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/voice. "
        "Unset: SQLite file <data_dir>/voice.db (embedded mode).",
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3/MinIO endpoint such as http://minio:9000. Unset: objects go under <data_dir>/objects.",
    )
    s3_access_key: SecretStr = Field(
        SecretStr(""), description="S3/MinIO access key (from a Secret in a cluster)."
    )
    s3_secret_key: SecretStr = Field(
        SecretStr(""), description="S3/MinIO secret key (from a Secret in a cluster)."
    )
    s3_bucket: str = Field("voice", description="Bucket that holds every tenant's audio; created if missing.")
    s3_region: str = Field("us-east-1", description="Region the S3 client signs for (MinIO accepts any).")
    default_tenant: str = Field("default", description="Tenant of requests without x-voice-tenant metadata.")
    require_tenant: bool = Field(False, description="Reject requests without x-voice-tenant (cluster mode).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: one JSON object a line with request id, tenant and method (for log collectors); "
        "text: plain lines for a terminal (`make run` uses text).",
    )
    grpc_max_message_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest gRPC message, in bytes, either way; uploads and audio stream in smaller chunks.",
    )
    grpc_max_connection_age_seconds: float = Field(
        300.0,
        ge=0,
        description="Servers close each client connection gracefully after this long (calls running on it "
        "finish), so clients resolve the address again and new replicas get calls; 0: never.",
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, how long running RPCs get to finish before they are cancelled."
    )
    internal_token: SecretStr = Field(
        SecretStr(""),
        description="The internal credential as a shared secret: the services accept calls only with it in the "
        "x-voice-internal-token metadata, and send it on their calls to each other (the gateway sends it too). "
        "Empty: no token (`make run` generates one per run; a cluster takes it from a Secret).",
    )
    internal_tls_cert_file: Path | None = Field(
        None,
        description="The internal credential as mutual TLS: this service's certificate (PEM), presented both as "
        "a server and as a client. Set with VOICE_INTERNAL_TLS_KEY_FILE and VOICE_INTERNAL_TLS_CA_FILE; the "
        "port then speaks TLS only.",
    )
    internal_tls_key_file: Path | None = Field(
        None, description="The private key (PEM) of VOICE_INTERNAL_TLS_CERT_FILE."
    )
    internal_tls_ca_file: Path | None = Field(
        None,
        validate_default=True,
        description="The CA (PEM) that signs the platform's certificates: callers must present a certificate it "
        "signed, and the services it calls must too.",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="A second port, always plaintext, that serves only grpc.health.v1: for Kubernetes' gRPC "
        "probes, which speak neither TLS nor the internal token, when the service port is mutual TLS (or the "
        "gateway's port is TLS); 0: none (probe the service port).",
    )
    internal_tls_server_name: str | None = Field(
        None,
        description="The name checked in the certificate of a service this one calls, instead of the host of its "
        "address (for certificates that name a service, e.g. voice-profiles, when the address is an IP).",
    )

    @field_validator("default_tenant")
    @classmethod
    def _tenant_shape(cls, value: str) -> str:
        if not TENANT_PATTERN.match(value):
            raise ValueError(
                "must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
            )
        return value

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value if "://" in value else f"http://{value}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port or https://host")
        return value

    @field_validator("internal_tls_cert_file", "internal_tls_key_file", "internal_tls_ca_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        # At start, not at the first call or handshake: a mounted Secret that is missing must stop the service.
        if value is not None and not value.is_file():
            raise ValueError("no such file (a PEM file is expected)")
        return value

    @field_validator("internal_tls_ca_file")
    @classmethod
    def _tls_files_together(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # The last of the three, so the other two are validated by now; one that failed (a file that is not
        # there) is absent from info.data and has its own error already.
        if "internal_tls_cert_file" not in info.data or "internal_tls_key_file" not in info.data:
            return value
        files = {
            "VOICE_INTERNAL_TLS_CERT_FILE": info.data["internal_tls_cert_file"],
            "VOICE_INTERNAL_TLS_KEY_FILE": info.data["internal_tls_key_file"],
            "VOICE_INTERNAL_TLS_CA_FILE": value,
        }
        missing = [name for name, path in files.items() if path is None]
        if missing and len(missing) < len(files):
            raise ValueError(
                "VOICE_INTERNAL_TLS_CERT_FILE, VOICE_INTERNAL_TLS_KEY_FILE and VOICE_INTERNAL_TLS_CA_FILE go "
                f"together (mutual TLS needs all three): set {' and '.join(missing)} too, or none of them"
            )
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.s3_endpoint is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'voice.db').resolve()}"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def internal_tls(self) -> bool:
        """Whether the internal credential is mutual TLS (the three files are set together or not at all)."""
        return self.internal_tls_ca_file is not None


def describe_validation_error(error: ValidationError, prefix: str) -> str:
    """Turn pydantic's error into lines that name the environment variable to fix."""
    lines = ["invalid settings:"]
    for item in error.errors():
        name = prefix + "_".join(str(part) for part in item["loc"]).upper()
        lines.append(f"  {name}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


ServiceSettings = TypeVar("ServiceSettings", bound=BaseSettings)


def load_settings(service: type[ServiceSettings], prefix: str) -> tuple[CommonSettings, ServiceSettings]:
    """The shared and the service's settings from the environment; a bad value stops the process with exit code 2
    and a line naming the variable (never a traceback)."""
    try:
        return CommonSettings(), service()
    except ValidationError as error:
        variable_prefix = "VOICE_" if error.title == CommonSettings.__name__ else prefix
        print(describe_validation_error(error, variable_prefix), file=sys.stderr)
        raise SystemExit(2) from None
