"""Where the gateway is and which key to send, the way the ``voice`` CLI finds them.

- Address: the ``target`` argument, else ``VOICE_TARGET``, else ``127.0.0.1:50051`` (where ``make run`` serves).
- Key: the ``api_key`` argument, else ``VOICE_API_KEY``, else the admin key ``make run`` saved in
  ``<VOICE_DATA_DIR or ./data>/admin-api-key`` (``data_dir`` overrides the directory). No key at all is allowed:
  the gateway then answers UNAUTHENTICATED, and ``Connection.key_source`` says where the client looked.
- TLS: ``tls=True`` (the system's trusted CAs) or ``ca_file`` (a private CA, which implies TLS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc import aio

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_VARIABLE = "VOICE_TARGET"
API_KEY_VARIABLE = "VOICE_API_KEY"
DATA_DIR_VARIABLE = "VOICE_DATA_DIR"
# voice_common.api_keys.LOCAL_KEY_FILE_NAME, repeated so the client needs nothing of the services' packages.
LOCAL_KEY_FILE_NAME = "admin-api-key"
# Above the servers' VOICE_GRPC_MAX_MESSAGE_BYTES default (8 MiB), so the server's limit is the one met and its
# error names it; gRPC's client default (4 MiB) would refuse a long unary synthesis.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Connection:
    """What a client connects with: ``key_source`` names where the key came from (or where none was found)."""

    target: str
    api_key: str | None
    key_source: str
    tls: bool = False
    ca_file: Path | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def channel_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not (self.tls or self.ca_file):
            return None
        root = self.ca_file.read_bytes() if self.ca_file else None  # None: the system's trusted CAs
        return grpc.ssl_channel_credentials(root_certificates=root)

    def sync_channel(self) -> grpc.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target, options=self.channel_options())
        return grpc.secure_channel(self.target, credentials, options=self.channel_options())

    def async_channel(self) -> aio.Channel:
        credentials = self.credentials()
        if credentials is None:
            return aio.insecure_channel(self.target, options=self.channel_options())
        return aio.secure_channel(self.target, credentials, options=self.channel_options())


def local_key_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``make run`` saves the local admin key: ``<data_dir or VOICE_DATA_DIR or ./data>/admin-api-key``."""
    directory = Path(data_dir) if data_dir is not None else Path(os.environ.get(DATA_DIR_VARIABLE) or "data")
    return directory / LOCAL_KEY_FILE_NAME


def find_api_key(
    api_key: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> tuple[str | None, str]:
    """The key to send and where it came from: the argument, ``VOICE_API_KEY``, else the saved local key (a file
    that cannot be read counts as none: the gateway's UNAUTHENTICATED then says a key is missing)."""
    if api_key:
        return api_key, "the api_key argument"
    if from_environment := os.environ.get(API_KEY_VARIABLE, "").strip():
        return from_environment, API_KEY_VARIABLE
    path = local_key_path(data_dir)
    try:
        saved = path.read_text().strip()
    except OSError:
        return None, str(path)
    return (saved or None), str(path)


def resolve_connection(
    target: str | None = None,
    api_key: str | None = None,
    *,
    tls: bool = False,
    ca_file: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> Connection:
    key, key_source = find_api_key(api_key, data_dir)
    return Connection(
        target=target or os.environ.get(TARGET_VARIABLE, "").strip() or DEFAULT_TARGET,
        api_key=key,
        key_source=key_source,
        tls=tls or ca_file is not None,
        ca_file=Path(ca_file) if ca_file is not None else None,
    )
