"""What an API key looks like, shared by the side that issues keys (the profile service, ``voice-admin keys``) and
the side that checks them (the gateway), and where ``make run`` keeps the local admin key for the CLI.

A key is ``vk_`` + 8 characters of public prefix + ``_`` + 43 characters of secret (256 random bits, URL-safe
base64). Only its SHA-256 is stored: a 256-bit random secret cannot be guessed, so a slow password hash would add
latency to every lookup and no safety. The prefix is unique too, and is what lists and access logs show.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

KEY_START = "vk_"
PREFIX_LENGTH = len(KEY_START) + 8
_KEY_PATTERN = re.compile(r"^vk_[a-z0-9]{8}_[A-Za-z0-9_-]{43}$")
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

SCOPE_PROFILES_READ = "profiles:read"
SCOPE_PROFILES_WRITE = "profiles:write"
SCOPE_TTS = "tts"
SCOPE_ASR = "asr"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_PROFILES_READ, SCOPE_PROFILES_WRITE, SCOPE_TTS, SCOPE_ASR, SCOPE_ADMIN)

# The file under the data directory where `make run` saves the embedded default's admin key (mode 0600) and where
# the CLI looks for a key when none is given.
LOCAL_KEY_FILE_NAME = "admin-api-key"


def new_key() -> str:
    """A fresh key: its first ``PREFIX_LENGTH`` characters are its public prefix."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return f"{KEY_START}{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def key_sha256(key: str) -> str:
    """What the database holds of a key: lower-case hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode()).hexdigest()


def well_formed(key: str) -> bool:
    """Whether ``key`` has the shape of a key (checked before any lookup, so junk never reaches the database)."""
    return bool(_KEY_PATTERN.match(key))


def local_key_path(data_dir: Path) -> Path:
    return data_dir / LOCAL_KEY_FILE_NAME
