"""``voice profiles …``, ``voice samples …``, ``voice export`` and ``voice import``: voices and their recordings.

Where a profile is meant, its name or its id will do (``profiles.resolve``). Human output by default; ``--json``
prints the API's response message, as these commands always printed it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_cli.progress_bars import download_bar, upload_bar
from voice_cli.rendering import (
    NOTHING,
    as_dict,
    clipped,
    count,
    downloaded,
    enum_name,
    fields,
    print_json,
    seconds,
    size,
    table,
    when,
)
from voice_client import VoiceClient


def create(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.create(
        args.name, language=args.language, description=args.description, temporary=args.temporary
    )
    if args.json:
        print_json(pb.CreateProfileResponse(profile=profile))
        return 0
    expiry = f", expires {when(profile.expire_time)} UTC" if profile.HasField("expire_time") else ""
    print(f'created profile "{profile.name}" ({profile.id}), language {profile.language}{expiry}')
    return 0


def list_profiles(client: VoiceClient, args: argparse.Namespace) -> int:
    if args.page_size or args.page_token:  # one page, as asked
        page = client.profiles.list_page(
            page_size=args.page_size, page_token=args.page_token,
            name_contains=args.name or "", language=args.language or "",
        )  # fmt: skip
    else:
        found = client.profiles.list(name_contains=args.name or "", language=args.language or "")
        page = pb.ListProfilesResponse(profiles=list(found))
    if args.json:
        print_json(page)
        return 0
    rows = [
        (
            profile.id,
            profile.name,
            profile.language or NOTHING,
            profile.sample_count,
            seconds(profile.total_sample_seconds),
            when(profile.create_time),
            when(profile.expire_time),
        )
        for profile in page.profiles
    ]
    table(
        ("ID", "NAME", "LANGUAGE", "SAMPLES", "AUDIO", "CREATED (UTC)", "EXPIRES"), rows, empty="no profiles"
    )
    if page.next_page_token:
        print(f"more: --page-token {page.next_page_token}")
    return 0


def get(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.resolve(args.profile)
    if args.json:
        print_json(pb.GetProfileResponse(profile=profile))
        return 0
    _show(profile)
    return 0


def _show(profile: pb.Profile) -> None:
    fields(
        [
            ("id", profile.id),
            ("name", profile.name),
            ("language", profile.language or NOTHING),
            ("description", profile.description or NOTHING),
            ("samples", f"{profile.sample_count} ({seconds(profile.total_sample_seconds)})"),
            ("created", f"{when(profile.create_time)} UTC"),
            ("expires", when(profile.expire_time)),
        ]
    )


def save(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.update(client.profiles.resolve(args.profile).id, permanent=True)
    if args.json:
        print_json(pb.UpdateProfileResponse(profile=profile))
    else:
        print(f'saved profile "{profile.name}" ({profile.id}): it no longer expires')
    return 0


def delete(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.resolve(args.profile)
    response = client.profiles.delete(profile.id, delete_generations=args.with_generations)
    if args.json:
        print_json(response)
    else:
        print(
            f'deleted profile "{profile.name}" ({profile.id}): {count(response.deleted_sample_count, "sample")}, '
            f"{count(response.deleted_generation_count, 'generation')}"
        )
    return 0


def export(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.resolve(args.profile)
    output = args.output or Path(f"{_file_stem(profile.name)}.voice.tar")
    bar, advance = download_bar("export")
    with bar:
        header = client.profiles.export_archive(profile.id, output, progress=advance)
    written = output.stat().st_size
    if args.json:
        print_json({"path": str(output), "bytes": written, "header": as_dict(header)})
    else:
        print(f'{output}: profile "{profile.name}", {size(written)}')
    return 0


def _file_stem(name: str) -> str:
    """A profile's name as a file name: letters, digits, dots and dashes."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "profile"


def import_archive(client: VoiceClient, args: argparse.Namespace) -> int:
    bar, advance = upload_bar(args.file, "import")
    with bar:
        response = client.profiles.import_archive(args.file, name=args.name or "", progress=advance)
    if args.json:
        print_json(response)
    else:
        profile = response.profile
        print(
            f'imported profile "{profile.name}" ({profile.id}) with {count(response.sample_count, "sample")}'
        )
    return 0


def add_sample(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.resolve(args.profile)
    bar, advance = upload_bar(args.file, "upload")
    with bar:
        sample = client.samples.upload(
            profile.id, args.file, reference_text=args.text, mime_type=args.mime_type, progress=advance
        )
    if args.json:
        print_json(pb.AddSampleResponse(sample=sample))
        return 0
    print(
        f'added sample {sample.id} to "{profile.name}": {seconds(sample.duration_seconds)} '
        f"from {sample.file_name} ({size(sample.original_size_bytes)})"
    )
    for warning in sample.warnings:
        print(f"  warning: {warning.message}")
    if sample.transcript_state == pb.TRANSCRIPT_STATE_NEEDED:
        print("  text: the ASR service will transcribe it (see `voice samples list`)")
    else:
        print(f"  text: {sample.reference_text}")
    return 0


def list_samples(client: VoiceClient, args: argparse.Namespace) -> int:
    samples = list(client.samples.list(client.profiles.resolve(args.profile).id))
    if args.json:
        print_json(pb.ListSamplesResponse(samples=samples))
        return 0
    rows = [
        (
            sample.id,
            sample.file_name,
            seconds(sample.duration_seconds),
            size(sample.original_size_bytes),
            enum_name(pb.TranscriptState.Name(sample.transcript_state), "TRANSCRIPT_STATE_"),
            clipped(sample.reference_text) or NOTHING,
        )
        for sample in samples
    ]
    table(("ID", "FILE", "DURATION", "SIZE", "TEXT BY", "TEXT"), rows, empty="no samples")
    return 0


def sample_audio(client: VoiceClient, args: argparse.Namespace) -> int:
    bar, advance = download_bar("download")
    with bar:
        audio = client.samples.download(
            args.id, args.output, encoding=args.encoding, sample_rate_hertz=args.rate,
            original=args.original, progress=advance,
        )  # fmt: skip
    downloaded(args.output, audio, as_json=args.json)
    return 0


def sample_url(client: VoiceClient, args: argparse.Namespace) -> int:
    link = client.samples.download_url(args.id, original=args.original, ttl=args.ttl)
    if args.json:
        print_json(link)
    else:
        print(link.url)
        print(f"({link.mime_type}; works until {when(link.expire_time)} UTC)")
    return 0


def delete_sample(client: VoiceClient, args: argparse.Namespace) -> int:
    client.samples.delete(args.id)
    if args.json:
        print_json(pb.DeleteSampleResponse())
    else:
        print(f"deleted sample {args.id}")
    return 0
