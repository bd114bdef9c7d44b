"""End to end: the real profile-service processes, started, used and stopped the way an operator does it.

``python -m voice_profiles`` in embedded mode (SQLite + files) and cluster mode (PostgreSQL + S3 on moto),
``voice-admin migrate|doctor|sweep``, fail-fast settings, SIGTERM drains, and ``make run``'s launcher.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from e2e_support import (
    NOT_SERVING,
    SERVING,
    Process,
    ServiceProcess,
    admin,
    explain,
    internal_metadata,
    service,
    service_env,
    stop,
    with_internal_token,
)
from google.protobuf import duration_pb2

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_common.object_store import FilesystemObjectStore
from voice_testing.media_files import encode_file, speechlike
from voice_testing.postgres import fresh_database
from voice_testing.s3_server import MotoServer, unique_bucket_name

pytestmark = pytest.mark.slow
SERVICE_NAME = "voice.profiles.v1.ProfileService"
# Internal (only TTS calls it), served beside ProfileService; its health follows the same readiness.
INGEST_SERVICE_NAME = "voice.profiles.v1.GenerationIngestService"
TENANT = "default"


@pytest.fixture(scope="module")
def wav() -> bytes:
    return encode_file(speechlike(3.0), 24000, "wav")


@pytest.fixture
def cluster_env(tmp_path: Path, postgres_admin_url: str, moto_server: MotoServer) -> Iterator[dict[str, str]]:
    """Environment of a service on a fresh PostgreSQL database and a fresh bucket (nothing migrated yet)."""
    with fresh_database(postgres_admin_url) as database_url:
        yield service_env(
            tmp_path / "data",
            VOICE_DATABASE_URL=database_url,
            VOICE_S3_ENDPOINT=moto_server.endpoint,
            VOICE_S3_ACCESS_KEY=moto_server.access_key,
            VOICE_S3_SECRET_KEY=moto_server.secret_key,
            VOICE_S3_BUCKET=unique_bucket_name("e2e"),
        )


# -- client helpers --------------------------------------------------------------------------------


def stub(process: ServiceProcess) -> pb_grpc.ProfileServiceStub:
    return pb_grpc.ProfileServiceStub(process.channel)


def create_profile(
    process: ServiceProcess,
    name: str = "Narrator",
    metadata: tuple[tuple[str, str], ...] = (),
    **fields: Any,
) -> pb.Profile:
    request = pb.CreateProfileRequest(name=name, **fields)
    return stub(process).CreateProfile(request, timeout=10, metadata=metadata).profile


def upload(
    profile_id: str, data: bytes, pause: threading.Event | None = None
) -> Iterator[pb.AddSampleRequest]:
    """AddSample's request stream; with ``pause``, it sets the event after the metadata and waits a second."""
    yield pb.AddSampleRequest(
        metadata=pb.SampleMetadata(
            profile_id=profile_id,
            reference_text="A reference sentence.",
            file_name="me.wav",
            mime_type="audio/wav",
        )
    )
    if pause is not None:
        pause.set()
        time.sleep(1.0)
    for start in range(0, len(data), 64 * 1024):
        yield pb.AddSampleRequest(chunk=data[start : start + 64 * 1024])


def add_sample(process: ServiceProcess, profile_id: str, data: bytes) -> pb.Sample:
    return stub(process).AddSample(upload(profile_id, data), timeout=20).sample


def sample_audio(process: ServiceProcess, sample_id: str) -> tuple[pb.AudioStreamHeader, bytes]:
    request = pb.GetSampleAudioRequest(
        id=sample_id, format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV)
    )
    responses = list(stub(process).GetSampleAudio(request, timeout=20))
    assert responses and responses[0].HasField("header"), responses[:1]
    return responses[0].header, b"".join(r.chunk.data for r in responses[1:])


def put_object(root: Path, key: str, data: bytes) -> None:
    asyncio.run(FilesystemObjectStore(root).put(key, data))


def delete_object(root: Path, key: str) -> None:
    asyncio.run(FilesystemObjectStore(root).delete(key))


def bucket_keys(env: dict[str, str]) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=env["VOICE_S3_ENDPOINT"],
        aws_access_key_id=env["VOICE_S3_ACCESS_KEY"],
        aws_secret_access_key=env["VOICE_S3_SECRET_KEY"],
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(Bucket=env["VOICE_S3_BUCKET"])
    return sorted(item["Key"] for item in listed.get("Contents", []))


# -- embedded mode ---------------------------------------------------------------------------------


def test_embedded_default_serves_and_observes(tmp_path: Path, wav: bytes) -> None:
    data_dir = tmp_path / "data"
    with service(service_env(data_dir), tmp_path / "logs") as process:
        process.wait_for(SERVING)
        assert process.health_status(SERVICE_NAME) == SERVING
        assert process.health_status(INGEST_SERVICE_NAME) == SERVING

        profile = create_profile(process, "Narrator", language="en")
        sample = add_sample(process, profile.id, wav)
        assert sample.profile_id == profile.id and sample.sample_rate_hertz == 24000
        assert sample.duration_seconds == pytest.approx(3.0, abs=0.05)
        listed = stub(process).ListSamples(pb.ListSamplesRequest(profile_id=profile.id), timeout=10).samples
        assert [s.id for s in listed] == [sample.id]
        header, audio = sample_audio(process, sample.id)
        assert (
            header.format.encoding == audio_pb2.AUDIO_ENCODING_WAV
            and header.format.sample_rate_hertz == 24000
        )
        assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
        assert len(audio) == pytest.approx(3.0 * 24000 * 2, rel=0.02)
        with pytest.raises(grpc.RpcError) as missing:
            stub(process).GetProfile(pb.GetProfileRequest(id=str(uuid.uuid4())), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        # Embedded mode keeps everything under VOICE_DATA_DIR.
        assert (data_dir / "voice.db").is_file()
        sample_dir = data_dir / "objects" / "tenants" / TENANT / "samples" / sample.id
        assert sorted(p.name for p in sample_dir.iterdir() if not p.name.startswith(".")) == [
            "normalized.wav",
            "original",
        ]
        assert (sample_dir / "original").read_bytes() == wav

        # Prometheus, on its own port.
        metrics = process.metrics()
        created = re.search(
            r'^voice_grpc_requests_total\{(?=[^}]*code="OK")(?=[^}]*method="CreateProfile")[^}]*\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
        assert created and float(created.group(1)) == 1.0, metrics
        assert re.search(r'voice_grpc_requests_total\{[^}]*code="NOT_FOUND"[^}]*method="GetProfile"', metrics)

        # JSON logs on stderr; each RPC's access log carries its request id, tenant and method.
        records = process.json_logs()
        access = [r for r in records if r.get("rpc_method", "").endswith("/CreateProfile")]
        assert len(access) == 1, records
        assert re.fullmatch(r"[0-9a-f]{32}", access[0]["request_id"]) and access[0]["tenant"] == TENANT
        assert access[0]["code"] == "OK" and access[0]["service"] == "profiles"
        assert all("request_id" in r for r in records)
        assert stop(process) == 0, process.describe()


def test_sigterm_drains_in_flight_rpcs_and_data_persists(tmp_path: Path, wav: bytes) -> None:
    data_dir = tmp_path / "data"
    env = service_env(data_dir)
    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        profile = create_profile(process, "Keeper")
        # An upload is in flight (the client pauses a second mid-stream) when SIGTERM arrives.
        paused = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(stub(process).AddSample, upload(profile.id, wav, paused), timeout=20)
            assert paused.wait(10)
            time.sleep(0.3)
            started = time.monotonic()
            process.signal(signal.SIGTERM)
            sample = in_flight.result(timeout=20).sample
        code = process.wait(10)
        assert code == 0, process.describe()
        assert time.monotonic() - started < 8
        assert sample.duration_seconds == pytest.approx(3.0, abs=0.05)
        messages = [r.get("message") for r in process.json_logs()]
        assert "draining" in messages and messages[-1] == "profile service stopped", messages

    with service(env, tmp_path / "logs") as again:
        again.wait_for(SERVING)
        got = stub(again).GetProfile(pb.GetProfileRequest(id=profile.id), timeout=10).profile
        assert got.name == "Keeper" and got.sample_count == 1
        _, audio = sample_audio(again, sample.id)
        assert audio[:4] == b"RIFF"
        assert stop(again) == 0, again.describe()


# -- cluster mode: PostgreSQL + S3 ---------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_and_s3_after_migrate(tmp_path: Path, cluster_env: dict[str, str], wav: bytes) -> None:
    migrated = admin(cluster_env, "migrate")
    assert migrated.returncode == 0, explain(migrated)
    assert "schema is current" in migrated.stdout and "postgresql" in migrated.stdout

    with service(cluster_env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        profile = create_profile(process, "Cluster voice")
        sample = add_sample(process, profile.id, wav)
        _, audio = sample_audio(process, sample.id)
        assert audio[:4] == b"RIFF"
        prefix = f"tenants/{TENANT}/samples/{sample.id}/"
        assert bucket_keys(cluster_env) == [f"{prefix}normalized.wav", f"{prefix}original"]
        assert not (Path(cluster_env["VOICE_DATA_DIR"]) / "voice.db").exists()
        assert stop(process) == 0, process.describe()


@pytest.mark.postgres
def test_unmigrated_database_is_not_serving_until_migrate(
    tmp_path: Path, cluster_env: dict[str, str]
) -> None:
    with service(cluster_env, tmp_path / "logs") as process:
        process.wait_for(NOT_SERVING)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert process.health_status() == NOT_SERVING, process.describe()
            assert process.health_status(SERVICE_NAME) == NOT_SERVING
            assert process.health_status(INGEST_SERVICE_NAME) == NOT_SERVING
            time.sleep(0.2)
        # The operator must be able to learn why from the log (health only says NOT_SERVING).
        reasons = [r for r in process.json_logs() if "voice-admin migrate" in str(r.get("reason", ""))]
        migrated = admin(cluster_env, "migrate")
        assert migrated.returncode == 0, explain(migrated)
        process.wait_for(SERVING, timeout=15)
        process.wait_for(SERVING, timeout=5, service=SERVICE_NAME)
        process.wait_for(SERVING, timeout=5, service=INGEST_SERVICE_NAME)
        assert create_profile(process, "After migrate").id
        assert stop(process) == 0, process.describe()
    assert reasons, (
        "the log never said why the service is not ready (schema behind; run voice-admin migrate):\n"
        + process.stderr()[-3000:]
    )


# -- voice-admin -----------------------------------------------------------------------------------


def test_doctor_finds_missing_and_orphaned_objects(tmp_path: Path, wav: bytes) -> None:
    data_dir = tmp_path / "data"
    env = service_env(data_dir)
    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        sample = add_sample(process, create_profile(process).id, wav)
        assert stop(process) == 0, process.describe()

    healthy = admin(env, "doctor")
    assert healthy.returncode == 0, explain(healthy)
    assert "rows whose object is missing: 0" in healthy.stdout and "objects no row owns: 0" in healthy.stdout

    objects = data_dir / "objects"
    orphan = f"tenants/{TENANT}/samples/{uuid.uuid4()}/original"
    missing = f"tenants/{TENANT}/samples/{sample.id}/normalized.wav"
    put_object(objects, orphan, b"left behind by a crashed upload")
    delete_object(objects, missing)

    sick = admin(env, "doctor")
    assert sick.returncode == 1, explain(sick)
    assert f"missing  {missing}" in sick.stdout and f"orphan   {orphan}" in sick.stdout, explain(sick)

    as_json = admin(env, "doctor", "--json")
    assert as_json.returncode == 1, explain(as_json)
    report = json.loads(as_json.stdout)
    assert report["rows_without_objects"] == [missing]
    assert report["objects_without_rows"] == [orphan]
    assert report["orphans_deleted"] == 0 and report["pending_deletions"] == 0

    repaired = admin(env, "doctor", "--delete-orphans")
    assert "deleted 1 orphaned object(s)" in repaired.stdout, explain(repaired)
    assert repaired.returncode == 1, "a row still lacks its object, so the store is still unhealthy"
    assert not (objects / orphan).exists()
    after = json.loads(admin(env, "doctor", "--json").stdout)
    assert after["objects_without_rows"] == [] and after["rows_without_objects"] == [missing]


def test_doctor_accounts_for_voice_prompts(tmp_path: Path) -> None:
    """The TTS service's prompts have no rows: a profile's count as owned, the old tts/prompts/ layout's as
    orphaned (and --delete-orphans removes them)."""
    data_dir = tmp_path / "data"
    env = service_env(data_dir)
    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        profile = create_profile(process)
        assert stop(process) == 0, process.describe()
    objects = data_dir / "objects"
    model_folder = "0123456789abcdef" * 2
    owned = f"tenants/{TENANT}/prompts/profiles/{profile.id}/{model_folder}/{'a' * 64}.safetensors"
    legacy = f"tts/prompts/{model_folder}/{'b' * 64}.safetensors"
    put_object(objects, owned, b"a voice prompt")
    put_object(objects, legacy, b"a voice prompt of the old layout")

    sick = admin(env, "doctor")
    assert sick.returncode == 1, explain(sick)
    assert "TTS voice prompts: 1 owned, 1 orphaned" in sick.stdout and f"orphan   {legacy}" in sick.stdout
    repaired = admin(env, "doctor", "--delete-orphans")
    assert repaired.returncode == 0 and "deleted 1 orphaned object(s)" in repaired.stdout, explain(repaired)
    assert (objects / owned).exists() and not (objects / legacy).exists()


def test_migrate_then_sweep(tmp_path: Path) -> None:
    env = service_env(tmp_path / "data")
    first = admin(env, "migrate")
    assert first.returncode == 0, explain(first)
    assert re.search(r"applied [1-9]\d* migration\(s\); schema is current", first.stdout), explain(first)
    again = admin(env, "migrate")
    assert again.returncode == 0 and "applied 0 migration(s)" in again.stdout, explain(again)

    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        create_profile(process, "Fleeting", temporary=True, ttl=duration_pb2.Duration(seconds=1))
        create_profile(process, "Lasting")
        assert stop(process) == 0, process.describe()
    time.sleep(1.1)

    swept = admin(env, "sweep")
    assert swept.returncode == 0, explain(swept)
    assert "deleted 1 expired profile(s), 0 expired generation(s)" in swept.stdout, explain(swept)
    idle = admin(env, "sweep")
    assert idle.returncode == 0 and "deleted 0 expired profile(s)" in idle.stdout, explain(idle)


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PROFILES_PORT", "notaport"),
        ("PROFILES_PORT", "70000"),
        ("VOICE_S3_ENDPOINT", "ftp://x"),
        ("VOICE_DEFAULT_TENANT", "Bad Tenant!"),
        ("VOICE_GRPC_MAX_MESSAGE_BYTES", "10"),
    ],
)
def test_invalid_settings_fail_fast_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    env = service_env(tmp_path / "data", **{variable: value})
    process = Process([sys.executable, "-m", "voice_profiles"], env, tmp_path / "logs", "invalid")
    try:
        code = process.wait(20)
    finally:
        process.close()
    stderr = process.stderr()
    assert code == 2, process.describe()
    assert variable in stderr and "invalid settings" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert not (tmp_path / "data").exists(), "nothing may be created before the settings are known to be good"


def test_admin_fails_fast_on_invalid_settings(tmp_path: Path) -> None:
    result = admin(service_env(tmp_path / "data", VOICE_S3_ENDPOINT="ftp://x"), "migrate")
    assert result.returncode == 2, explain(result)
    assert "VOICE_S3_ENDPOINT" in result.stderr and "Traceback" not in result.stderr, explain(result)


# -- make run --------------------------------------------------------------------------------------


def test_launcher_starts_the_platform_and_stops_on_sigint(tmp_path: Path) -> None:
    # The launcher's services take the token of the environment (make run makes one when there is none), so the
    # test may call the profile service straight, as the platform's services do.
    env = with_internal_token(service_env(tmp_path / "data"))
    with service(env, tmp_path / "logs", module="voice_common.launcher") as launcher:
        launcher.wait_for(SERVING)
        assert create_profile(launcher, "Via make run", metadata=internal_metadata(env)).id
        assert (tmp_path / "data" / "voice.db").is_file()  # the environment reached the service
        code = stop(launcher, signal.SIGINT, timeout=20)
        assert code == 0, launcher.describe()
        assert "[launcher] all services stopped" in launcher.stderr()
        assert launcher.health_status() is None, "the service still answers after the launcher stopped"


def test_ctrl_c_on_make_run_drains_in_flight_rpcs(tmp_path: Path, wav: bytes) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole process group: the launcher and every service."""
    env = with_internal_token(service_env(tmp_path / "data"))
    with service(env, tmp_path / "logs", module="voice_common.launcher", start_new_session=True) as launcher:
        launcher.wait_for(SERVING)
        profile = create_profile(launcher, "Interrupted", metadata=internal_metadata(env))
        paused = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(
                stub(launcher).AddSample,
                upload(profile.id, wav, paused),
                timeout=20,
                metadata=internal_metadata(env),
            )
            assert paused.wait(10)
            time.sleep(0.3)
            os.killpg(launcher.pid, signal.SIGINT)
            try:
                outcome: object = in_flight.result(timeout=20).sample.id
            except grpc.RpcError as error:
                outcome = error
        assert launcher.wait(20) == 0, launcher.describe()
        assert isinstance(outcome, str), (
            f"the upload in flight at Ctrl-C failed instead of draining: {outcome}\n{launcher.describe()}"
        )
        assert "profile service stopped" in launcher.stderr(), launcher.describe()
