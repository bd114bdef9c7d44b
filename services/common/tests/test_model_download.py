"""The model downloader against a real HTTP hub on loopback (voice_testing.hub_server): files land in the
Hugging Face cache layout verified, a cut transfer resumes with a Range request, corrupted bytes are refused or
repaired, and an unreachable hub fails within seconds."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voice_common.model_download import (
    CorruptDownload,
    DownloadProgress,
    HubUnreachable,
    ModelDownloader,
    ModelNotOnHub,
    TransferFailed,
    cached_snapshot,
    size_text,
)
from voice_testing.hub_server import LocalHub

REPO = "Org/Little-Model"
# Bigger than huggingface_hub's 10 MB download chunk: a transfer cut after the first chunk leaves bytes to resume.
WEIGHTS_BYTES = 24 * 1024 * 1024
CHUNK_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository on disk: small JSON and text files, and LFS weights (random bytes) in a subfolder too."""
    folder = tmp_path_factory.mktemp("repo")
    (folder / "config.json").write_text('{"model_type": "little"}\n')
    (folder / "vocabulary.txt").write_text("a\nb\nc\n")
    (folder / "model.safetensors").write_bytes(os.urandom(WEIGHTS_BYTES))
    (folder / "decoder").mkdir()
    (folder / "decoder" / "config.json").write_text('{"layers": 2}\n')
    (folder / "decoder" / "model.safetensors").write_bytes(os.urandom(300_000))
    return folder


@pytest.fixture
def hub(model_dir: Path) -> Iterator[LocalHub]:
    with LocalHub() as server:
        server.add_model(REPO, model_dir)
        yield server


@pytest.fixture
def downloader(hub: LocalHub, tmp_path: Path) -> ModelDownloader:
    return ModelDownloader(cache_dir=tmp_path / "hub", endpoint=hub.endpoint, progress_interval_seconds=0.05)


def _same_files(snapshot: Path, model_dir: Path) -> None:
    expected = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()}
    assert {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()} == expected
    for name in expected:
        assert (snapshot / name).read_bytes() == (model_dir / name).read_bytes(), name


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_download_fills_the_cache_with_verified_files_and_reports_progress(
    hub: LocalHub, downloader: ModelDownloader, model_dir: Path, tmp_path: Path
) -> None:
    assert downloader.cached(REPO) is None
    hub.bytes_per_second = 40 * 1024 * 1024  # about 0.7 s: the watcher reports progress inside a file
    seen: list[DownloadProgress] = []
    report = downloader.download(REPO, on_progress=seen.append)

    _same_files(report.snapshot, model_dir)
    assert report.snapshot.parent.parent == tmp_path / "hub" / "models--Org--Little-Model"
    assert (report.snapshot.parent.parent / "refs" / "main").read_text() == report.commit
    assert report.files == 5 and len(report.downloaded) == 5 and report.repaired == []
    assert cached_snapshot(REPO, required=["config.json"], cache_dir=tmp_path / "hub") == report.snapshot

    total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert report.downloaded_bytes == total
    done = [progress.done_bytes for progress in seen]
    assert done == sorted(done) and done[-1] == total and seen[-1].percent == 100
    assert any(0 < p.done_bytes < total and p.file == "model.safetensors" for p in seen), seen
    assert {p.total_bytes for p in seen} == {total} and seen[-1].files_done == 5

    # A second run verifies the cache and transfers nothing.
    hub.requests.clear()
    again = downloader.download(REPO)
    assert again.downloaded == [] and again.repaired == [] and again.snapshot == report.snapshot
    assert hub.file_requests("GET") == [] and hub.file_requests("HEAD") == []


def test_a_cut_transfer_resumes_with_a_range_request(
    hub: LocalHub, downloader: ModelDownloader, model_dir: Path
) -> None:
    hub.cut_once(REPO, "model.safetensors", after_bytes=CHUNK_BYTES + 1_000_000)
    report = downloader.download(REPO)
    _same_files(report.snapshot, model_dir)
    sha256 = hub.file_sha256(REPO, "model.safetensors")
    transfers = [range_header for path, range_header in hub.file_requests() if path == f"/lfs/{sha256}"]
    # The first chunk was kept: the second attempt asked only for the rest.
    assert transfers == [None, f"bytes={CHUNK_BYTES}-"]


def test_a_transfer_cut_in_one_run_is_resumed_by_the_next(
    hub: LocalHub, model_dir: Path, tmp_path: Path
) -> None:
    """An interrupted ``make models`` leaves the partial blob; running it again continues it."""
    once = ModelDownloader(cache_dir=tmp_path / "hub", endpoint=hub.endpoint, attempts=1)
    hub.cut_once(REPO, "model.safetensors", after_bytes=CHUNK_BYTES + 1_000_000)
    with pytest.raises(TransferFailed, match=r"model\.safetensors.*run it again to resume"):
        once.download(REPO)
    assert once.cached(REPO) is None  # no refs/main: a half-finished model is not "cached"
    report = once.download(REPO)
    _same_files(report.snapshot, model_dir)
    sha256 = hub.file_sha256(REPO, "model.safetensors")
    assert [r for p, r in hub.file_requests() if p == f"/lfs/{sha256}"] == [None, f"bytes={CHUNK_BYTES}-"]


def test_corrupted_bytes_from_the_hub_are_refused(hub: LocalHub, downloader: ModelDownloader) -> None:
    hub.corrupt(REPO, "decoder/model.safetensors")
    with pytest.raises(CorruptDownload) as caught:
        downloader.download(REPO)
    message = str(caught.value)
    assert caught.value.path == "decoder/model.safetensors"
    assert "'decoder/model.safetensors'" in message and REPO in message and "sha256" in message
    assert downloader.cached(REPO) is None
    snapshots = list((downloader.cache_dir / "models--Org--Little-Model" / "snapshots").iterdir())
    assert not (snapshots[0] / "decoder" / "model.safetensors").exists()  # nothing corrupted is kept
    assert len([p for p, _ in hub.file_requests() if p.startswith("/lfs/")]) >= 3  # every attempt fetched it


def test_a_corrupted_file_in_the_cache_is_found_and_downloaded_again(
    hub: LocalHub, downloader: ModelDownloader, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    report = downloader.download(REPO)
    damaged = report.snapshot / "config.json"
    damaged.write_text('{"model_type": "other"}\n')  # writes through the link into the blob
    (report.snapshot / "model.safetensors").write_bytes(b"\0" * WEIGHTS_BYTES)  # same size, other bytes
    hub.requests.clear()

    again = downloader.download(REPO)
    assert sorted(again.repaired) == ["config.json", "model.safetensors"]
    assert sorted(again.downloaded) == ["config.json", "model.safetensors"]
    _same_files(again.snapshot, model_dir)
    warnings = [r for r in caplog.records if "corrupted" in r.getMessage()]
    assert {getattr(r, "file", None) for r in warnings} == {"config.json", "model.safetensors"}


def test_a_blob_gone_from_the_cache_is_downloaded_again(
    hub: LocalHub, downloader: ModelDownloader, model_dir: Path
) -> None:
    report = downloader.download(REPO)
    (report.snapshot / "vocabulary.txt").resolve().unlink()  # the link stays, pointing nowhere
    again = downloader.download(REPO)
    assert again.downloaded == ["vocabulary.txt"] and again.repaired == []
    _same_files(again.snapshot, model_dir)


def test_an_unreachable_hub_fails_within_seconds(tmp_path: Path) -> None:
    downloader = ModelDownloader(cache_dir=tmp_path / "hub", endpoint=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(HubUnreachable) as caught:
        downloader.download(REPO)
    assert time.monotonic() - started < 3
    assert "cannot be reached" in str(caught.value) and "refused" in str(caught.value)
    assert caught.value.repo_id == REPO


def test_a_hub_that_never_answers_fails_after_the_timeout(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        downloader = ModelDownloader(
            cache_dir=tmp_path / "hub",
            endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
            timeout_seconds=1.0,
        )
        started = time.monotonic()
        with pytest.raises(HubUnreachable, match="no answer within 1 s"):
            downloader.download(REPO)
        assert time.monotonic() - started < 4


def test_offline_mode_sends_no_request(
    hub: LocalHub, downloader: ModelDownloader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachable, match="HF_HUB_OFFLINE"):
        downloader.download(REPO)
    assert hub.requests == []


def test_an_unreachable_hub_mentions_a_cached_copy(hub: LocalHub, tmp_path: Path) -> None:
    ModelDownloader(cache_dir=tmp_path / "hub", endpoint=hub.endpoint).download(REPO)
    offline = ModelDownloader(cache_dir=tmp_path / "hub", endpoint=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubUnreachable, match="is in the local cache"):
        offline.download(REPO)


def test_a_model_the_hub_does_not_have_is_named(hub: LocalHub, downloader: ModelDownloader) -> None:
    with pytest.raises(ModelNotOnHub, match="'Org/Missing' is not on the hub"):
        downloader.download("Org/Missing")
    with pytest.raises(ModelNotOnHub, match="no revision 'v9'"):
        downloader.download(REPO, revision="v9")


def test_patterns_choose_the_files(hub: LocalHub, downloader: ModelDownloader) -> None:
    report = downloader.download(REPO, patterns=["config.json", "*.txt"])
    assert sorted(report.downloaded) == ["config.json", "vocabulary.txt"]
    assert {p.name for p in report.snapshot.iterdir()} == {"config.json", "vocabulary.txt"}


def test_sizes_read_at_a_glance() -> None:
    assert [size_text(n) for n in (512, 12_345, 1_800_000, 2_500_000_000)] == [
        "512 B",
        "12 KB",
        "1.8 MB",
        "2.5 GB",
    ]
