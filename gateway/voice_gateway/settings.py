"""Settings of the gateway (environment variables with the ``GATEWAY_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voice_common.config import TENANT_PATTERN
from voice_gateway.rate_limits import Limits


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a container).")
    port: int = Field(50051, ge=0, le=65535, description="The public gRPC port; 0 picks a free one (tests).")
    metrics_port: int = Field(9151, ge=0, le=65535, description="Prometheus /metrics port; 0 turns it off.")
    http_port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="The OpenAI-compatible HTTP port (docs/openai.md), on GATEWAY_HOST, same keys and limits as "
        "gRPC; 0 turns it off.",
    )
    http_max_upload_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="The largest file the OpenAI-compatible HTTP face accepts in an upload (OpenAI's own limit is "
        "25 MB); a larger one is refused with 413 as it arrives, never held whole in memory.",
    )
    profiles_target: str = Field(
        "dns:///127.0.0.1:50052",
        description="The profile service (which also checks API keys), as a gRPC target. In a cluster, "
        "dns:///<headless service>:<port>: the gateway spreads calls over every address the name resolves to "
        "(round_robin).",
    )
    tts_target: str = Field("dns:///127.0.0.1:50053", description="The TTS service, as a gRPC target.")
    asr_target: str = Field("dns:///127.0.0.1:50054", description="The ASR service, as a gRPC target.")
    authentication: Literal["keys", "off"] = Field(
        "keys",
        description="keys: every call but health needs an API key (authorization: Bearer <key>). off: no keys, "
        "every call acts for VOICE_DEFAULT_TENANT with every scope (only for a machine nobody else reaches).",
    )
    key_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long a key check is remembered (good or bad): a revoked key stops working within "
        "this time. 0 checks every call.",
    )
    requests_per_second: float = Field(
        50.0,
        gt=0,
        description="Sustained calls per second one key may start, unless its record says otherwise.",
    )
    burst: int = Field(
        100, ge=1, description="Calls one key may start at once above the sustained rate (the bucket's size)."
    )
    max_concurrent_streams: int = Field(
        16,
        ge=1,
        description="Streaming calls one key may have open at once, unless its record says otherwise.",
    )
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) of the public port; with GATEWAY_TLS_KEY_FILE turns TLS on.",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of the public port's certificate.")
    metric_tenants: list[str] = Field(
        [],
        description="Tenants named in metric labels (a JSON list); any other tenant is counted as 'other', so "
        "the number of time series stays bounded.",
    )
    keepalive_seconds: float = Field(
        30.0,
        gt=0,
        description="Ping idle connections (clients and backends) this often, so dead peers are noticed.",
    )
    keepalive_timeout_seconds: float = Field(
        10.0, gt=0, description="A ping unanswered this long closes the connection."
    )
    backend_connect_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="How long a call waits for a backend that is not connected before it fails UNAVAILABLE.",
    )

    @field_validator("metric_tenants")
    @classmethod
    def _tenant_names(cls, value: list[str]) -> list[str]:
        bad = [tenant for tenant in value if not TENANT_PATTERN.match(tenant)]
        if bad:
            raise ValueError(f"not tenant ids: {bad}")
        return value

    @field_validator("tls_cert_file", "tls_key_file")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a file")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE, or neither")
        return self

    @property
    def default_limits(self) -> Limits:
        return Limits(self.requests_per_second, self.burst, self.max_concurrent_streams)
