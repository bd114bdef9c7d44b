"""``voice history list|show|download|stats|delete`` (alias ``generations``): what TTS stored (``store``).

``--profile`` takes a profile's name or id. Human output by default; ``--json`` prints the API's messages.
"""

from __future__ import annotations

import argparse

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_cli.progress_bars import download_bar
from voice_cli.rendering import NOTHING, clipped, count, downloaded, fields, print_json, seconds, table, when
from voice_client import VoiceClient


def _profile_id(client: VoiceClient, args: argparse.Namespace) -> str:
    return client.profiles.resolve(args.profile).id if args.profile else ""


def list_generations(client: VoiceClient, args: argparse.Namespace) -> int:
    found = client.generations.list(profile_id=_profile_id(client, args), text_contains=args.text or "")
    generations = [generation for _, generation in zip(range(args.limit or 10**9), found, strict=False)]
    if args.json:
        print_json(pb.ListGenerationsResponse(generations=generations))
        return 0
    rows = [
        (
            generation.id,
            when(generation.create_time),
            generation.profile_name or NOTHING,
            seconds(generation.duration_seconds),
            generation.language or NOTHING,
            generation.seed,
            clipped(generation.text),
        )
        for generation in generations
    ]
    table(
        ("ID", "CREATED (UTC)", "PROFILE", "DURATION", "LANGUAGE", "SEED", "TEXT"),
        rows,
        empty="no generations",
    )
    return 0


def show(client: VoiceClient, args: argparse.Namespace) -> int:
    generation = client.generations.get(args.id)
    if args.json:
        print_json(pb.GetGenerationResponse(generation=generation))
        return 0
    parameters = ", ".join(f"{name} {value:g}" for name, value in sorted(generation.parameters.items()))
    fields(
        [
            ("id", generation.id),
            ("profile", f"{generation.profile_name} ({generation.profile_id})"),
            ("text", generation.text),
            ("language", generation.language or NOTHING),
            ("duration", f"{seconds(generation.duration_seconds)} at {generation.sample_rate_hertz} Hz"),
            ("seed", generation.seed),
            ("model", generation.model_id or NOTHING),
            ("parameters", parameters or NOTHING),
            ("created", f"{when(generation.create_time)} UTC"),
            ("expires", when(generation.expire_time)),
        ]
    )
    return 0


def download(client: VoiceClient, args: argparse.Namespace) -> int:
    bar, advance = download_bar("download")
    with bar:
        audio = client.generations.download(
            args.id, args.output, encoding=args.encoding, sample_rate_hertz=args.rate, progress=advance
        )
    downloaded(args.output, audio, as_json=args.json)
    return 0


def stats(client: VoiceClient, args: argparse.Namespace) -> int:
    response = client.generations.stats(profile_id=_profile_id(client, args))
    if args.json:
        print_json(response)
        return 0
    rows = [
        (entry.profile_name or entry.profile_id, entry.count, seconds(entry.total_duration_seconds))
        for entry in response.by_profile
    ]
    table(("PROFILE", "GENERATIONS", "AUDIO"), rows, empty="no generations")
    if rows:
        print(
            f"total  {count(response.count, 'generation')}, {seconds(response.total_duration_seconds)} of audio"
        )
    return 0


def delete(client: VoiceClient, args: argparse.Namespace) -> int:
    client.generations.delete(args.id)
    if args.json:
        print_json(pb.DeleteGenerationResponse())
    else:
        print(f"deleted generation {args.id}")
    return 0
