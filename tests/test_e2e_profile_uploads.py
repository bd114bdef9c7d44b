"""End to end: uploads interrupted by the process's end leave nothing behind (docs/consistency.md).

A SIGTERM drain that cuts off a slow upload stores none of it; a `kill -9` while an upload's objects are being
written leaves them under an upload lease, so `voice-admin doctor` reports them as pending (not orphans) and
`voice-admin sweep` deletes them once the lease has run out.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from e2e_support import SERVING, ServiceProcess, admin, explain, service, service_env

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_testing.media_files import encode_file, speechlike

pytestmark = pytest.mark.slow
TENANT = "default"


def stub(process: ServiceProcess) -> pb_grpc.ProfileServiceStub:
    return pb_grpc.ProfileServiceStub(process.channel)


def create_profile(process: ServiceProcess) -> pb.Profile:
    return stub(process).CreateProfile(pb.CreateProfileRequest(name="Interrupted"), timeout=10).profile


def upload(profile_id: str, data: bytes, chunk: int, pause: float = 0.0) -> Iterator[pb.AddSampleRequest]:
    yield pb.AddSampleRequest(metadata=pb.SampleMetadata(profile_id=profile_id, reference_text="Some words."))
    for start in range(0, len(data), chunk):
        yield pb.AddSampleRequest(chunk=data[start : start + chunk])
        time.sleep(pause)


def doctor(env: dict[str, str]) -> dict[str, object]:
    result = admin(env, "doctor", "--json")
    report: dict[str, object] = json.loads(result.stdout)
    report["exit_code"] = result.returncode
    return report


def stored_keys(data_dir: Path) -> list[str]:
    """The objects in the embedded store (files under objects/tenants, without sidecars and temporary files)."""
    root = data_dir / "objects"
    return sorted(
        str(path.relative_to(root))
        for path in (root / "tenants").rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )


def test_sigterm_cutting_off_a_slow_upload_stores_none_of_it(tmp_path: Path) -> None:
    """The drain's grace period ends while a 27.8 MB WAV is still streaming in (256 KiB every 0.15 s): the call is
    cancelled, and the part received is neither taken for a whole upload nor left in the store."""
    data_dir = tmp_path / "data"
    env = service_env(data_dir, VOICE_SHUTDOWN_GRACE_SECONDS="2")
    wav = encode_file(speechlike(290.0, 48000), 48000, "wav")
    assert len(wav) > 27_000_000
    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        profile = create_profile(process)
        with ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                stub(process).AddSample, upload(profile.id, wav, 256 * 1024, pause=0.15), timeout=60
            )
            time.sleep(2.2)
            process.signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as cut_off:
                call.result(timeout=60)
        assert cut_off.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert process.wait(30) == 0, process.describe()

    report = doctor(env)
    assert report["exit_code"] == 0, report
    assert report["objects_without_rows"] == [] and report["rows_without_objects"] == [], report
    # A drain leaves nothing at all: no object, and nothing for the sweeper either.
    assert stored_keys(data_dir) == [] and report["pending_deletions"] == 0, report

    with service(env, tmp_path / "logs") as again:
        again.wait_for(SERVING)
        kept = stub(again).GetProfile(pb.GetProfileRequest(id=profile.id), timeout=10).profile
        assert kept.sample_count == 0, "a cut-off upload was stored as a sample"
        again.signal(signal.SIGTERM)
        assert again.wait(30) == 0, again.describe()


def test_kill_9_while_objects_are_written_leaves_them_to_the_sweeper(tmp_path: Path) -> None:
    """SIGKILL once the original is in the store and the normalised audio is still being made (an MP3 takes a
    while to decode): the object has no row, but the outbox owns it until the upload lease ends."""
    data_dir = tmp_path / "data"
    lease_seconds = 8.0  # longer than the doctor and the early sweep below take
    env = service_env(data_dir, PROFILES_UPLOAD_LEASE_SECONDS=str(lease_seconds))
    mp3 = encode_file(speechlike(60.0, 48000), 48000, "mp3")
    with service(env, tmp_path / "logs") as process:
        process.wait_for(SERVING)
        profile = create_profile(process)
        samples = data_dir / "objects" / "tenants" / TENANT / "samples"
        landed = threading.Event()

        def kill_when_the_original_lands() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(samples.glob("*/original")):
                    process.signal(signal.SIGKILL)
                    landed.set()
                    return
                time.sleep(0.002)

        with ThreadPoolExecutor(2) as pool:
            killer = pool.submit(kill_when_the_original_lands)
            call = pool.submit(stub(process).AddSample, upload(profile.id, mp3, 1024 * 1024), timeout=30)
            killer.result(timeout=40)
            assert landed.is_set(), "the original never reached the store"
            with pytest.raises(grpc.RpcError):
                call.result(timeout=30)
        process.wait(10)
    killed_at = time.monotonic()

    left = stored_keys(data_dir)
    assert any(key.endswith("/original") for key in left), left
    report = doctor(env)
    assert report["exit_code"] == 0, report
    assert report["objects_without_rows"] == [], "a killed upload's objects must be pending, not orphans"
    assert report["pending_deletions"] == 2, report  # the original and the normalised audio, leased

    # What a kill in the middle of a filesystem write leaves: a temporary file never renamed into place. One older
    # than the lease cannot belong to a write still running, and the sweeper removes it.
    original = next(samples.glob("*/original"))
    abandoned = original.with_name(".tmp-0badc0de-normalized.wav")
    abandoned.write_bytes(b"half a file")
    long_ago = time.time() - lease_seconds - 60
    os.utime(abandoned, (long_ago, long_ago))

    early = admin(env, "sweep")
    assert early.returncode == 0, explain(early)
    assert "1 abandoned write(s)" in early.stdout, explain(early)
    assert not abandoned.exists()
    assert stored_keys(data_dir) == left, (
        "the sweeper must not touch a create's objects before its lease ends"
    )

    time.sleep(max(0.0, killed_at + lease_seconds + 0.5 - time.monotonic()))
    swept = admin(env, "sweep")
    assert swept.returncode == 0, explain(swept)
    assert "2 pending object(s)" in swept.stdout, explain(swept)
    assert stored_keys(data_dir) == []
    after = doctor(env)
    assert after["exit_code"] == 0 and after["pending_deletions"] == 0, after
