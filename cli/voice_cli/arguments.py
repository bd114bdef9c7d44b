"""The ``voice`` command line: every command, its options and the function that runs it (``handler``).

Global options (where the gateway is, which key) come before the command; ``--json`` is an option of every
command. docs/cli.md is the reference.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from voice_cli import history_commands, key_commands, model_commands, profile_commands, speech_commands
from voice_common.api_keys import SCOPES

DOWNLOAD_ENCODINGS = ("wav", "flac", "mp3", "ogg_opus", "linear16")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="voice",
        description="Command-line client of the voice platform, through its gateway (docs/cli.md).",
        epilog="exit status: 0 done, 1 refused by the server, 2 usage, 3 unreachable or unavailable, 4 key refused",
    )
    root.add_argument(
        "--target",
        # VOICE_PROFILES_TARGET: the name this setting had before the gateway, still honoured.
        default=os.environ.get("VOICE_TARGET")
        or os.environ.get("VOICE_PROFILES_TARGET")
        or "127.0.0.1:50051",
        help="the gateway's address (env VOICE_TARGET; default 127.0.0.1:50051)",
    )
    root.add_argument(
        "--key",
        help="API key (env VOICE_API_KEY; default: the key make run saved in <VOICE_DATA_DIR or data>/admin-api-key)",
    )
    root.add_argument("--tls", action="store_true", help="the gateway serves TLS (trusting the system's CAs)")
    root.add_argument(
        "--ca", type=Path, help="PEM file of the CA that signed the gateway's certificate (implies --tls)"
    )
    groups = root.add_subparsers(dest="group", required=True, metavar="COMMAND")
    _add_speech_commands(groups)
    _add_profile_commands(groups)
    _add_sample_commands(groups)
    _add_history_commands(groups)
    _add_key_commands(groups)
    _add_model_commands(groups)
    return root


def _json_option() -> argparse.ArgumentParser:
    option = argparse.ArgumentParser(add_help=False)
    option.add_argument("--json", action="store_true", help="print the API's messages as JSON (for scripts)")
    return option


def _command(actions: Any, name: str, handler: Any, help_text: str | None = None, **kwargs: Any) -> Any:
    command = actions.add_parser(name, help=help_text, parents=[_json_option()], **kwargs)
    command.set_defaults(handler=handler)
    return command


def _add_profile_commands(groups: Any) -> None:
    profiles = groups.add_parser(
        "profiles", help="voices: create, list, get, save, delete, export, import"
    ).add_subparsers(dest="action", required=True)
    create = _command(profiles, "create", profile_commands.create, "a new, empty voice")
    create.add_argument("name")
    create.add_argument("--language", default="auto")
    create.add_argument("--description", default="")
    create.add_argument("--temporary", action="store_true", help="expires after the server's default (12 h)")
    listing = _command(profiles, "list", profile_commands.list_profiles, "every profile (a table)")
    listing.add_argument("--name", help="names containing this")
    listing.add_argument("--language")
    listing.add_argument("--page-size", type=int, default=0, help="one page of this many")
    listing.add_argument("--page-token", default="", help="the page a previous list named")
    _command(profiles, "get", profile_commands.get, "one profile").add_argument("profile", help="name or id")
    _command(profiles, "save", profile_commands.save, "keep a temporary profile").add_argument(
        "profile", help="name or id"
    )
    delete = _command(profiles, "delete", profile_commands.delete, "remove a profile and its samples")
    delete.add_argument("profile", help="name or id")
    delete.add_argument("--with-generations", action="store_true", help="its history too")
    for actions in (profiles, groups):  # `voice profiles export` and `voice export`
        export = _command(actions, "export", profile_commands.export, "a profile as a tar archive")
        export.add_argument("profile", help="name or id")
        export.add_argument("-o", "--output", type=Path, help="default: NAME.voice.tar")
        importing = _command(actions, "import", profile_commands.import_archive, "a profile from an archive")
        importing.add_argument("file", type=Path)
        importing.add_argument("--name", help="import under this name")


def _add_sample_commands(groups: Any) -> None:
    samples = groups.add_parser(
        "samples", help="a profile's recordings: add, list, audio, url, delete"
    ).add_subparsers(dest="action", required=True)
    add = _command(samples, "add", profile_commands.add_sample, "upload a recording to a profile")
    add.add_argument("profile", help="name or id")
    add.add_argument("file", type=Path)
    add.add_argument("--text", help="what the recording says (omit to have it transcribed)")
    add.add_argument("--mime-type")
    _command(samples, "list", profile_commands.list_samples, "a profile's samples").add_argument(
        "profile", help="name or id"
    )
    audio = _command(samples, "audio", profile_commands.sample_audio, "download a sample's audio")
    audio.add_argument("id")
    _download_options(audio)
    audio.add_argument("--original", action="store_true", help="the file exactly as uploaded")
    url = _command(
        samples, "url", profile_commands.sample_url, "a download URL straight from the object store"
    )
    url.add_argument("id")
    url.add_argument("--original", action="store_true")
    url.add_argument("--ttl", type=int, default=900, help="seconds the URL works (default 900)")
    _command(samples, "delete", profile_commands.delete_sample, "remove a sample").add_argument("id")


def _download_options(command: Any) -> None:
    command.add_argument("-o", "--output", type=Path, required=True)
    command.add_argument("--encoding", choices=DOWNLOAD_ENCODINGS, default="wav")
    command.add_argument("--rate", type=int, default=0, help="sample rate in Hz (default 24000)")


def _add_history_commands(groups: Any) -> None:
    history = groups.add_parser(
        "history",
        aliases=["generations"],
        help="stored syntheses: list, show, download, stats, delete",
    ).add_subparsers(dest="action", required=True)
    listing = _command(history, "list", history_commands.list_generations, "newest first (a table)")
    listing.add_argument("--profile", help="name or id")
    listing.add_argument("--text", help="texts containing this")
    listing.add_argument("--limit", type=int, default=0, help="at most this many (default: all)")
    _command(history, "show", history_commands.show, "one generation").add_argument("id")
    download = _command(history, "download", history_commands.download, "a generation's audio")
    download.add_argument("id")
    _download_options(download)
    _command(history, "stats", history_commands.stats, "counts and seconds, per profile").add_argument(
        "--profile", help="name or id"
    )
    _command(history, "delete", history_commands.delete, "remove a generation").add_argument("id")


def _add_key_commands(groups: Any) -> None:
    keys = groups.add_parser("keys", help="API keys of your tenant (needs a key with the admin scope)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = _command(actions, "create", key_commands.create, "make a key (its secret is shown this once)")
    create.add_argument("name")
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="what the key may do (repeat)"
    )
    create.add_argument("--rps", type=float, default=0.0, help="sustained requests per second (0: default)")
    create.add_argument("--burst", type=int, default=0, help="requests at once above the rate (0: default)")
    create.add_argument("--max-streams", type=int, default=0, help="streams open at once (0: default)")
    create.add_argument("--ttl-days", type=float, help="days until the key expires (default: never)")
    _command(actions, "list", key_commands.list_keys, "the keys (a table)").add_argument(
        "--all", action="store_true", help="revoked and expired too"
    )
    _command(actions, "revoke", key_commands.revoke, "revoke a key by its id (permanent)").add_argument("id")


def _add_model_commands(groups: Any) -> None:
    models = groups.add_parser("models", help="the TTS and ASR models: status, load, unload (admin scope)")
    actions = models.add_subparsers(dest="action", required=True)
    _command(actions, "status", model_commands.status, "state, model, device, memory").add_argument(
        "service", nargs="?", choices=model_commands.SERVICES, help="default: both"
    )
    load = _command(
        actions, "load", model_commands.load, "load or switch a model (the old one serves meanwhile)"
    )
    load.add_argument("service", choices=model_commands.SERVICES)
    load.add_argument("--model", default="", help="a hub id, a size (0.6B, tiny.en) or a directory")
    load.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: the service's setting)")
    load.add_argument(
        "--dtype", default="", help="TTS: bfloat16, float16, float32; ASR: a compute type (int8…)"
    )
    _command(actions, "unload", model_commands.unload, "free the model's memory").add_argument(
        "service", choices=model_commands.SERVICES
    )


def _add_speech_commands(groups: Any) -> None:
    clone = groups.add_parser(
        "clone", help="a new voice from one recording: profile, sample, transcript, first sentence"
    )
    clone.set_defaults(handler=speech_commands.clone)
    clone.add_argument("file", type=Path, help="the recording (any format a sample may have)")
    clone.add_argument("--name", required=True, help="the voice's name (unique in your tenant)")
    clone.add_argument("--text", help="what the recording says (omit: the ASR service transcribes it)")
    clone.add_argument("--language", default="auto", help="the voice's language (default auto)")
    clone.add_argument("--description", default="")
    clone.add_argument("--say", help="a first sentence to speak in the new voice (needs -o)")
    clone.add_argument(
        "-o", "--output", type=Path, help="where --say's audio goes (its ending picks the format)"
    )
    clone.add_argument("--seed", type=int, help="--say's seed (default: a random one, reported)")
    clone.add_argument(
        "--wait",
        type=float,
        default=120.0,
        help="seconds to wait for the machine transcript when no --text is given (0: do not wait; default 120)",
    )
    clone.add_argument("--json", action="store_true", help="print the profile and sample as the API's JSON")

    say = groups.add_parser("say", help="speak a text in a voice")
    say.set_defaults(handler=speech_commands.say)
    say.add_argument("text", help="what to say (- reads it from stdin)")
    say.add_argument("--voice", required=True, help="a profile's name or id")
    say.add_argument(
        "-o", "--output", help="the audio file (- for stdout: nothing else goes there; default speech.FORMAT)"
    )
    say.add_argument("--format", choices=list(speech_commands.SPEECH_FORMATS), default="wav")
    say.add_argument("--rate", type=int, default=0, help="sample rate in Hz (default 24000)")
    say.add_argument("--seed", type=int, help="the same seed, text and voice give the same audio")
    say.add_argument("--language", default="", help="zh en ja ko de fr ru pt es it (default: detected)")
    say.add_argument(
        "--speed", type=float, help="speaking rate, 0.25-4.0 (1.2: a fifth faster; the voice keeps its pitch)"
    )
    say.add_argument("--store", action="store_true", help="keep it in the history (voice history list)")
    say.add_argument("--stream", action="store_true", help="write the audio as it is made")
    say.add_argument("--json", action="store_true", help="the summary as JSON (to stderr with -o -)")

    transcribe = groups.add_parser("transcribe", help="the text of a recording")
    transcribe.set_defaults(handler=speech_commands.transcribe)
    transcribe.add_argument("file", type=Path)
    transcribe.add_argument("--format", choices=speech_commands.transcript_formats.FORMATS, default="text")
    transcribe.add_argument("--json", action="store_true", help="same as --format json")
    transcribe.add_argument("--words", action="store_true", help="word timestamps (srt/vtt: a cue per word)")
    transcribe.add_argument("--language", default="", help="a hint (default: detected)")
    transcribe.add_argument(
        "--live",
        action="store_true",
        help="send the file at real-time pace through live transcription (WAV, FLAC, Ogg Opus, MP3)",
    )
    transcribe.add_argument(
        "--pace", type=float, default=1.0, help="with --live: times real time (2: twice as fast)"
    )
