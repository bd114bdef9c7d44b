"""What the bad-input tests (test_fuzz_public_rpcs.py, test_malformed_audio.py) share: the whole platform behind
the gateway, any public method called by its path, the answers a bad request may get, and a fingerprint of what is
stored so a refused call can be shown to have written nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import grpc
import psycopg
from e2e_support import (
    SERVING,
    ServiceProcess,
    admin,
    bearer,
    explain,
    service,
    service_env,
    start_gateway,
    with_internal_token,
)
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor

from tools.tiny_model import build_tiny_model
from voice_common.api_keys import SCOPES
from voice_gateway.routes import Route

# Importing torch, qwen_tts and CTranslate2 and loading both models takes a while on a small machine.
START_SECONDS = 180.0
# A bad request gets one of these: precise, and the client's to fix (or to retry, for RESOURCE_EXHAUSTED).
# INTERNAL and UNKNOWN (a bug the server did not foresee), DATA_LOSS, DEADLINE_EXCEEDED (a hang), CANCELLED and
# UNAVAILABLE (a service that fell over) never are.
PRECISE_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ABORTED,
    }
)
BACKENDS = {
    "voice.profiles.v1.ProfileService": "profiles",
    "voice.tts.v1.TtsService": "tts",
    "voice.asr.v1.AsrService": "asr",
}
TENANT = "fuzz"
# The tiny model's own cap on frames per piece when a request sets none (generate_config.json's max_new_tokens,
# minus one): a fuzzed synthesis without a limit is then a second of work, not minutes.
TINY_DEFAULT_FRAMES = 4


@dataclass
class Platform:
    env: dict[str, str]
    data_dir: Path
    tiny_model: Path
    profiles: ServiceProcess
    tts: ServiceProcess
    asr: ServiceProcess
    gateway: ServiceProcess
    key: str = ""
    storage: str = "embedded"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.key)

    def processes(self) -> dict[str, ServiceProcess]:
        return {"profiles": self.profiles, "tts": self.tts, "asr": self.asr, "gateway": self.gateway}


@contextlib.contextmanager
def running_platform(root: Path, storage: Mapping[str, str] | None = None) -> Iterator[Platform]:
    """Profiles, TTS (the tiny model, at most TINY_DEFAULT_FRAMES frames a piece unless asked), ASR (tiny.en) and
    the gateway in front, with the internal credential, as ``make run`` starts them; and a key of tenant ``fuzz``
    with every scope. ``storage``: the VOICE_DATABASE_URL and VOICE_S3_* settings of PostgreSQL and an S3 server
    (migrated here first); none, the embedded SQLite file and folder."""
    tiny = build_tiny_model(root / "tiny-qwen3-tts", seed=0)
    config_path = tiny / "generation_config.json"
    generation_config = json.loads(config_path.read_text()) if config_path.exists() else {}
    generation_config["max_new_tokens"] = TINY_DEFAULT_FRAMES + 1
    config_path.write_text(json.dumps(generation_config))
    data_dir = root / "data"
    env = with_internal_token(
        service_env(
            data_dir,
            TTS_MODEL=str(tiny),
            TTS_PRELOAD="true",
            TTS_MAX_TEXT_CHARS="200",
            ASR_PRELOAD="true",
            ASR_CPU_THREADS="1",
            HF_HUB_CACHE=str(root / "hub"),
            OMP_NUM_THREADS="1",
            **(storage or {}),
        )
    )
    if storage:
        migrated = admin(env, "migrate")
        assert migrated.returncode == 0, explain(migrated)
    log_dir = root / "logs"
    with contextlib.ExitStack() as stack:
        profiles = stack.enter_context(service(env, log_dir))
        tts = stack.enter_context(service(env, log_dir, module="voice_tts", prefix="TTS"))
        asr = stack.enter_context(service(env, log_dir, module="voice_asr", prefix="ASR"))
        profiles.wait_for(SERVING, timeout=60)
        gateway = stack.enter_context(contextlib.closing(start_gateway(env, log_dir)))
        tts.wait_for(SERVING, timeout=START_SECONDS, service="voice.tts.v1.TtsService")
        asr.wait_for(SERVING, timeout=START_SECONDS, service="voice.asr.v1.AsrService")
        for name in BACKENDS:
            gateway.wait_for(SERVING, timeout=30, service=name)
        platform = Platform(env, data_dir, tiny, profiles, tts, asr, gateway)
        # Far above the gateway's default rate: the fuzzing is sequential, and a refusal for pace tests nothing.
        result = admin(
            env,
            "keys",
            "create",
            "--tenant",
            TENANT,
            "--name",
            "fuzz",
            "--rps",
            "10000",
            "--burst",
            "10000",
            *[argument for scope in SCOPES for argument in ("--scope", scope)],
        )
        assert result.returncode == 0, explain(result)
        platform.key = result.stdout.strip()
        yield platform


def method_of(route: Route) -> MethodDescriptor:
    method: MethodDescriptor = (
        descriptor_pool.Default().FindServiceByName(route.service).methods_by_name[route.name]
    )
    return method


@dataclass
class Answer:
    code: grpc.StatusCode
    details: str
    responses: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK


def call(platform: Platform, route: Route, requests: Any, timeout: float = 90.0) -> Answer:
    """``route`` called through the gateway with ``requests`` (one message, or a list for a client stream), every
    response read; the status it ends with."""
    method = method_of(route)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    shapes = {
        (False, False): platform.gateway.channel.unary_unary,
        (False, True): platform.gateway.channel.unary_stream,
        (True, False): platform.gateway.channel.stream_unary,
        (True, True): platform.gateway.channel.stream_stream,
    }
    callable_: Any = shapes[(route.request_streaming, route.response_streaming)](
        route.method,
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    sent = iter(list(requests)) if route.request_streaming else requests
    responses: list[Any] = []
    try:
        result = callable_(sent, metadata=platform.metadata, timeout=timeout)
        if route.response_streaming:
            responses.extend(result)
        else:
            responses.append(result)
    except grpc.RpcError as error:
        return Answer(error.code(), error.details() or "", responses)
    return Answer(grpc.StatusCode.OK, "", responses)


# -- what is stored ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """The primary keys of every row of every table (an update is not an addition), and every object in the
    store."""

    rows: frozenset[tuple[str, str]]
    objects: frozenset[str]

    def added_since(self, before: Stored) -> list[str]:
        return sorted(f"row {table}:{key}" for table, key in self.rows - before.rows) + sorted(
            f"object {key}" for key in self.objects - before.objects
        )


def stored(platform: Platform) -> Stored:
    """What the database and the object store hold now (read-only: the services keep writing)."""
    if "VOICE_DATABASE_URL" in platform.env:
        return Stored(frozenset(_postgres_rows(platform.env)), frozenset(_bucket_keys(platform.env)))
    return Stored(frozenset(_sqlite_rows(platform.data_dir)), frozenset(_folder_keys(platform.data_dir)))


def _sqlite_rows(data_dir: Path) -> set[tuple[str, str]]:
    rows: set[tuple[str, str]] = set()
    with contextlib.closing(
        sqlite3.connect(f"file:{data_dir / 'voice.db'}?mode=ro", uri=True, timeout=30)
    ) as db:
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith(("alembic_version", "sqlite_"))
        ]
        for table in tables:
            keys = [column[1] for column in db.execute(f'PRAGMA table_info("{table}")') if column[5]]
            selected = ", ".join(f'"{name}"' for name in keys) or "rowid"
            rows.update((table, repr(key)) for key in db.execute(f'SELECT {selected} FROM "{table}"'))
    return rows


def _folder_keys(data_dir: Path) -> set[str]:
    root = data_dir / "objects"
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def _postgres_rows(env: Mapping[str, str]) -> set[tuple[str, str]]:
    url = env["VOICE_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    keys: dict[str, list[str]] = {}
    rows: set[tuple[str, str]] = set()
    with psycopg.connect(url, autocommit=True) as db:
        for table, column in db.execute(
            "SELECT kcu.table_name, kcu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu ON tc.constraint_name = kcu.constraint_name "
            "AND tc.table_schema = kcu.table_schema WHERE tc.constraint_type = 'PRIMARY KEY' "
            "AND tc.table_schema = current_schema() ORDER BY kcu.ordinal_position"
        ):
            if not table.startswith("alembic_version"):
                keys.setdefault(table, []).append(column)
        for table, columns in keys.items():
            selected = ", ".join(f'"{name}"' for name in columns)
            rows.update((table, repr(tuple(key))) for key in db.execute(f'SELECT {selected} FROM "{table}"'))
    return rows


def _bucket_keys(env: Mapping[str, str]) -> set[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=env["VOICE_S3_ENDPOINT"],
        aws_access_key_id=env["VOICE_S3_ACCESS_KEY"],
        aws_secret_access_key=env["VOICE_S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=env["VOICE_S3_BUCKET"]):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def doctor(env: dict[str, str]) -> dict[str, Any]:
    result = admin(env, "doctor", "--json")
    assert result.stdout.strip(), explain(result)
    report: dict[str, Any] = json.loads(result.stdout)
    report["exit_code"] = result.returncode
    return report


def unhandled_errors(processes: Iterable[ServiceProcess]) -> list[str]:
    """The log records of errors nothing mapped to a status (the interceptor's "unhandled error": an INTERNAL)."""
    found = []
    for process in processes:
        for record in process.json_logs():
            if record.get("message") == "unhandled error" or record.get("level") in ("CRITICAL",):
                found.append(json.dumps(record)[:3000])
    return found
