"""ExportProfile / ImportProfile through a real server: a round trip, and imports that must leave nothing."""

from __future__ import annotations

import io
import json
import tarfile

import grpc
from field_helpers import add_sample, new_profile
from profiles_harness import Harness, expect_error, tenant_metadata

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_testing.media_files import encode_file, speechlike


async def export(harness: Harness, tenant: str, profile_id: str) -> tuple[pb.ExportHeader, bytes]:
    header = None
    data = bytearray()
    async for message in harness.stub.ExportProfile(
        pb.ExportProfileRequest(id=profile_id), metadata=tenant_metadata(tenant)
    ):
        if message.WhichOneof("payload") == "header":
            header = message.header
        else:
            data += message.chunk
    assert header is not None
    return header, bytes(data)


def import_call(harness: Harness, tenant: str, archive: bytes, name: str = "") -> object:
    messages = [pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata(name=name))]
    messages += [pb.ImportProfileRequest(chunk=archive[i : i + 65536]) for i in range(0, len(archive), 65536)]
    return harness.stub.ImportProfile(iter(messages), metadata=tenant_metadata(tenant))


def rebuild(archive: bytes, edit: object) -> bytes:
    """Rewrite an archive with ``edit(files)`` applied to its {name: bytes}."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    edit(files)  # type: ignore[operator]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_export_then_import_into_another_tenant(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant, name="Travelling voice", description="d", language="de")
    mp3 = encode_file(speechlike(3.0, rate=44100), 44100, "mp3")
    await add_sample(
        harness, tenant, profile.id, mp3, text="Guten Tag.", file_name="a.mp3", mime_type="audio/mpeg"
    )
    await add_sample(
        harness, tenant, profile.id, encode_file(speechlike(2.5, seed=4), 24000, "wav"), text=None
    )
    header, archive = await export(harness, tenant, profile.id)
    assert header.file_name == "Travelling-voice.voice.tar" and header.mime_type == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert tar.extractfile(manifest["samples"][0]["original"]).read() == mp3  # type: ignore[union-attr]
    assert manifest["profile"] == {"name": "Travelling voice", "description": "d", "language": "de"}
    assert [s["reference_text"] for s in manifest["samples"]] == ["Guten Tag.", None]

    other = tenant + "-copy"
    response = await import_call(harness, other, archive)  # type: ignore[misc]
    imported = response.profile
    assert response.sample_count == 2 and imported.id != profile.id
    assert (imported.name, imported.description, imported.language) == ("Travelling voice", "d", "de")
    samples = (
        await harness.stub.ListSamples(
            pb.ListSamplesRequest(profile_id=imported.id), metadata=tenant_metadata(other)
        )
    ).samples
    assert sorted((s.reference_text, s.transcript_state, s.file_name) for s in samples) == [
        ("", pb.TRANSCRIPT_STATE_NEEDED, "sample.wav"),
        ("Guten Tag.", pb.TRANSCRIPT_STATE_PROVIDED, "a.mp3"),
    ]
    assert len(await harness.objects(other)) == 4
    # Same tenant: the name is taken unless the import renames it.
    await expect_error(import_call(harness, tenant, archive), grpc.StatusCode.ALREADY_EXISTS)
    renamed = await import_call(harness, tenant, archive, name="Second copy")  # type: ignore[misc]
    assert renamed.profile.name == "Second copy"


async def test_import_with_a_bad_sample_leaves_nothing(harness: Harness, tenant: str) -> None:
    source = tenant + "-src"
    profile = await new_profile(harness, source)
    for seed in range(2):
        await add_sample(harness, source, profile.id, encode_file(speechlike(2.5, seed=seed), 24000, "wav"))
    _, archive = await export(harness, source, profile.id)

    def corrupt_second(files: dict[str, bytes]) -> None:
        files["samples/1/original"] = b"not audio at all" * 50

    error = await expect_error(
        import_call(harness, tenant, rebuild(archive, corrupt_second)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "could not be decoded" in error.details()
    assert await harness.objects(tenant) == []
    assert await harness.rows(tenant) == {"profiles": 0, "samples": 0, "generations": 0}

    def drop_file(files: dict[str, bytes]) -> None:
        del files["samples/0/original"]

    error = await expect_error(
        import_call(harness, tenant, rebuild(archive, drop_file)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "missing" in error.details()

    def wrong_version(files: dict[str, bytes]) -> None:
        manifest = json.loads(files["manifest.json"])
        manifest["version"] = 99
        files["manifest.json"] = json.dumps(manifest).encode()

    error = await expect_error(
        import_call(harness, tenant, rebuild(archive, wrong_version)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "version 99" in error.details()
    assert await harness.objects(tenant) == []
    assert await harness.rows(tenant) == {"profiles": 0, "samples": 0, "generations": 0}


async def test_export_of_another_tenants_profile_is_not_found(harness: Harness, tenant: str) -> None:
    profile = await new_profile(harness, tenant)
    await expect_error(
        harness.stub.ExportProfile(
            pb.ExportProfileRequest(id=profile.id), metadata=tenant_metadata(tenant + "-x")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
