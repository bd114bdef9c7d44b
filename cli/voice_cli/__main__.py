"""``voice``: a command-line client for the platform, with progress bars for long transfers.

    voice profiles create "Narrator" --language en
    voice samples add <profile-id> recording.m4a --text "What the recording says."
    voice samples audio <sample-id> -o sample.flac --encoding flac
    voice profiles export <profile-id> -o narrator.voice.tar
    voice keys create ci --scope tts --scope profiles:read
    voice clone me.wav --name Narrator --say "Hello there." -o first.wav
    voice say "Read this aloud." --voice Narrator -o hello.mp3 --format mp3
    voice transcribe meeting.wav --format srt

docs/cli.md is the reference of every command.

It talks to the gateway (``--target``, env ``VOICE_TARGET``, default 127.0.0.1:50051) with an API key: ``--key``,
else env ``VOICE_API_KEY``, else the admin key ``make run`` saved in ``<VOICE_DATA_DIR or ./data>/admin-api-key``.
The key decides the tenant (the gateway overwrites any tenant a client names), so there is no tenant option.
``--tls`` (with ``--ca FILE`` for a private CA) for a gateway that serves TLS.

The management commands print JSON (the API's own field names); clone, say and transcribe print for people unless
``--json``. Errors print the gRPC code and message; the exit status says what kind of failure it was
(voice_cli.exit_codes: 1 refused, 2 usage, 3 unavailable, 4 key refused).
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from tqdm import tqdm

from voice.audio.v1 import audio_pb2
from voice.auth.v1 import api_key_service_pb2 as keys_pb
from voice.auth.v1 import api_key_service_pb2_grpc as keys_grpc
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.profiles.v1 import profiles_service_pb2_grpc as pb_grpc
from voice_cli import exit_codes, speech_commands
from voice_cli.live_audio import NotLiveAudio
from voice_client import RetryPolicy, VoiceClient, VoiceError
from voice_common.api_keys import SCOPES, local_key_path

CHUNK_BYTES = 64 * 1024
ENCODINGS = {
    "linear16": audio_pb2.AUDIO_ENCODING_LINEAR16,
    "wav": audio_pb2.AUDIO_ENCODING_WAV,
    "flac": audio_pb2.AUDIO_ENCODING_FLAC,
    "ogg_opus": audio_pb2.AUDIO_ENCODING_OGG_OPUS,
    "mp3": audio_pb2.AUDIO_ENCODING_MP3,
}


def _print(message: Message) -> None:
    print(MessageToJson(message, indent=2))


def _upload(path: Path, first: Any, wrap: Callable[[bytes], Any], label: str) -> Iterator[Any]:
    """The metadata message, then the file in chunks, advancing a progress bar as they go out."""
    yield first
    size = path.stat().st_size
    with (
        path.open("rb") as file,
        tqdm(total=size, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=None) as bar,
    ):
        while chunk := file.read(CHUNK_BYTES):
            yield wrap(chunk)
            bar.update(len(chunk))
        bar.set_postfix_str("processing on the server…")


def _download(responses: Iterator[Any], output: Path, label: str, total: int | None = None) -> Any:
    header = None
    with (
        output.open("wb") as file,
        tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=None) as bar,
    ):
        for response in responses:
            if response.WhichOneof("payload") == "header":
                header = response.header
                continue
            data = response.chunk.data if hasattr(response.chunk, "data") else response.chunk
            file.write(data)
            bar.update(len(data))
    return header


def api_key(args: argparse.Namespace) -> tuple[str | None, str]:
    """The key to send and where it came from (for messages): --key, VOICE_API_KEY, else the saved local key."""
    if args.key:
        return args.key, "--key"
    if environ_key := os.environ.get("VOICE_API_KEY", "").strip():
        return environ_key, "VOICE_API_KEY"
    path = local_key_path(Path(os.environ.get("VOICE_DATA_DIR") or "data"))
    try:
        saved = path.read_text().strip()
    except FileNotFoundError:
        return None, str(path)
    except OSError as error:
        print(f"warning: cannot read the saved API key in {path}: {error.strerror}", file=sys.stderr)
        return None, str(path)
    return (saved or None), str(path)


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    if not (args.tls or args.ca):
        return grpc.insecure_channel(args.target)
    root = args.ca.read_bytes() if args.ca else None  # None: the system's trusted CAs
    return grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=root))


SPEECH_COMMANDS = {
    "clone": speech_commands.clone,
    "say": speech_commands.say,
    "transcribe": speech_commands.transcribe,
}
# A command line gives up on a gateway that does not answer after a few seconds of retries (the client's default
# keeps trying for a minute, right for a service, long for a person waiting at a prompt).
CLI_RETRY = RetryPolicy(max_attempts=4, deadline=20.0)


def run_speech(args: argparse.Namespace) -> int:
    """clone, say and transcribe, through voice_client."""
    key, key_source = api_key(args)
    try:
        with VoiceClient(args.target, key, tls=args.tls, ca_file=args.ca, retry=CLI_RETRY) as client:
            return SPEECH_COMMANDS[args.group](client, args)
    except VoiceError as error:
        message = error.message + "".join(
            f"\n  {violation.field}: {violation.description}" for violation in error.field_violations
        )
        return exit_codes.report_failure(error.code, message, key, key_source)
    except (NotLiveAudio, speech_commands.UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:  # Ctrl-C: leaving the client's context cancelled the call
        return exit_codes.INTERRUPTED
    except BrokenPipeError:  # the reader of stdout (a player, head) went away
        # Python would complain again while flushing stdout on exit; nothing more is going there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.READER_GONE


def run(args: argparse.Namespace) -> int:
    if args.group in SPEECH_COMMANDS:
        return run_speech(args)
    key, key_source = api_key(args)
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with open_channel(args) as channel:
        stub = pb_grpc.ProfileServiceStub(channel)
        keys = keys_grpc.ApiKeyServiceStub(channel)
        call: dict[str, Callable[[], None]] = {
            "profiles create": lambda: _print(
                stub.CreateProfile(
                    pb.CreateProfileRequest(
                        name=args.name,
                        language=args.language,
                        description=args.description,
                        temporary=args.temporary,
                    ),
                    metadata=metadata,
                )
            ),
            "profiles list": lambda: _print(
                stub.ListProfiles(
                    pb.ListProfilesRequest(
                        name_contains=args.name or "",
                        language=args.language or "",
                        page_size=args.page_size,
                        page_token=args.page_token,
                    ),
                    metadata=metadata,
                )
            ),
            "profiles get": lambda: _print(
                stub.GetProfile(pb.GetProfileRequest(id=args.id), metadata=metadata)
            ),
            "profiles save": lambda: _print(
                stub.UpdateProfile(
                    pb.UpdateProfileRequest(
                        profile=pb.Profile(id=args.id),
                        update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
                    ),
                    metadata=metadata,
                )
            ),
            "profiles delete": lambda: _print(
                stub.DeleteProfile(
                    pb.DeleteProfileRequest(id=args.id, delete_generations=args.with_generations),
                    metadata=metadata,
                )
            ),
            "profiles export": lambda: _export(stub, args, metadata),
            "profiles import": lambda: _print(
                stub.ImportProfile(
                    _upload(
                        args.file,
                        pb.ImportProfileRequest(metadata=pb.ImportProfileMetadata(name=args.name or "")),
                        lambda chunk: pb.ImportProfileRequest(chunk=chunk),
                        "import",
                    ),
                    metadata=metadata,
                )
            ),
            "samples add": lambda: _print(
                stub.AddSample(
                    _upload(
                        args.file,
                        pb.AddSampleRequest(metadata=_sample_metadata(args)),
                        lambda chunk: pb.AddSampleRequest(chunk=chunk),
                        "upload",
                    ),
                    metadata=metadata,
                )
            ),
            "samples list": lambda: _print(
                stub.ListSamples(pb.ListSamplesRequest(profile_id=args.profile_id), metadata=metadata)
            ),
            "samples audio": lambda: _sample_audio(stub, args, metadata),
            "samples url": lambda: _print(
                stub.GetDownloadUrl(
                    pb.GetDownloadUrlRequest(
                        sample_id=args.id, original=args.original, ttl=duration_pb2.Duration(seconds=args.ttl)
                    ),
                    metadata=metadata,
                )
            ),
            "samples delete": lambda: _print(
                stub.DeleteSample(pb.DeleteSampleRequest(id=args.id), metadata=metadata)
            ),
            "generations list": lambda: _print(
                stub.ListGenerations(
                    pb.ListGenerationsRequest(profile_id=args.profile or "", text_contains=args.text or ""),
                    metadata=metadata,
                )
            ),
            "generations stats": lambda: _print(
                stub.GetGenerationStats(
                    pb.GetGenerationStatsRequest(profile_id=args.profile or ""), metadata=metadata
                )
            ),
            "keys create": lambda: _create_key(keys, args, metadata),
            "keys list": lambda: _print(
                keys.ListApiKeys(keys_pb.ListApiKeysRequest(include_inactive=args.all), metadata=metadata)
            ),
            "keys revoke": lambda: _print(
                keys.RevokeApiKey(keys_pb.RevokeApiKeyRequest(id=args.id), metadata=metadata)
            ),
        }
        try:
            call[f"{args.group} {args.action}"]()
        except grpc.RpcError as error:
            return exit_codes.report_failure(error.code(), error.details() or "", key, key_source)
    return exit_codes.OK


def _create_key(stub: keys_grpc.ApiKeyServiceStub, args: argparse.Namespace, metadata: Any) -> None:
    request = keys_pb.CreateApiKeyRequest(
        name=args.name,
        scopes=args.scope,
        rate_limits=keys_pb.RateLimits(
            requests_per_second=args.rps, burst=args.burst, max_concurrent_streams=args.max_streams
        ),
    )
    if args.ttl_days is not None:
        request.ttl.FromSeconds(round(args.ttl_days * 86400))
    # The whole response, secret included: like every result, the API's JSON (the secret is shown only this once).
    _print(stub.CreateApiKey(request, metadata=metadata))


def _sample_metadata(args: argparse.Namespace) -> pb.SampleMetadata:
    mime_type = args.mime_type or mimetypes.guess_type(args.file.name)[0] or ""
    metadata = pb.SampleMetadata(profile_id=args.profile_id, file_name=args.file.name, mime_type=mime_type)
    if args.text is not None:
        metadata.reference_text = args.text
    return metadata


def _export(stub: pb_grpc.ProfileServiceStub, args: argparse.Namespace, metadata: Any) -> None:
    output = args.output or Path(f"{args.id}.voice.tar")
    _download(stub.ExportProfile(pb.ExportProfileRequest(id=args.id), metadata=metadata), output, "export")
    print(output)


def _sample_audio(stub: pb_grpc.ProfileServiceStub, args: argparse.Namespace, metadata: Any) -> None:
    request = pb.GetSampleAudioRequest(
        id=args.id,
        original=args.original,
        format=audio_pb2.AudioFormat(encoding=ENCODINGS[args.encoding], sample_rate_hertz=args.rate),
    )
    header = _download(stub.GetSampleAudio(request, metadata=metadata), args.output, "download")
    if header is not None:
        print(f"{args.output}: {header.mime_type}, {header.duration_seconds:.2f} s")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="voice", description="Command-line client of the voice platform.")
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
    groups = root.add_subparsers(dest="group", required=True)

    profiles = groups.add_parser(
        "profiles", help="voices: create, list, get, save, delete, export, import"
    ).add_subparsers(dest="action", required=True)
    create = profiles.add_parser("create")
    create.add_argument("name")
    create.add_argument("--language", default="auto")
    create.add_argument("--description", default="")
    create.add_argument("--temporary", action="store_true", help="expires after the server's default (12 h)")
    listing = profiles.add_parser("list")
    listing.add_argument("--name")
    listing.add_argument("--language")
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="")
    for name in ("get", "save", "delete", "export"):
        command = profiles.add_parser(name)
        command.add_argument("id")
        if name == "delete":
            command.add_argument("--with-generations", action="store_true")
        if name == "export":
            command.add_argument("-o", "--output", type=Path)
    importing = profiles.add_parser("import")
    importing.add_argument("file", type=Path)
    importing.add_argument("--name", help="import under this name")

    samples = groups.add_parser(
        "samples", help="a profile's recordings: add, list, audio, url, delete"
    ).add_subparsers(dest="action", required=True)
    add = samples.add_parser("add")
    add.add_argument("profile_id")
    add.add_argument("file", type=Path)
    add.add_argument("--text", help="what the recording says (omit to have it transcribed)")
    add.add_argument("--mime-type")
    samples.add_parser("list").add_argument("profile_id")
    audio = samples.add_parser("audio")
    audio.add_argument("id")
    audio.add_argument("-o", "--output", type=Path, required=True)
    audio.add_argument("--encoding", choices=sorted(ENCODINGS), default="wav")
    audio.add_argument("--rate", type=int, default=0, help="sample rate in Hz (default 24000)")
    audio.add_argument("--original", action="store_true", help="the file exactly as uploaded")
    url = samples.add_parser("url", help="a download URL straight from the object store")
    url.add_argument("id")
    url.add_argument("--original", action="store_true")
    url.add_argument("--ttl", type=int, default=900, help="seconds the URL works (default 900)")
    samples.add_parser("delete").add_argument("id")

    generations = groups.add_parser(
        "generations", help="the history of stored syntheses: list, stats"
    ).add_subparsers(dest="action", required=True)
    gen_list = generations.add_parser("list")
    gen_list.add_argument("--profile")
    gen_list.add_argument("--text")
    generations.add_parser("stats").add_argument("--profile")

    keys = groups.add_parser("keys", help="API keys of your tenant (needs a key with the admin scope)")
    key_actions = keys.add_subparsers(dest="action", required=True)
    key_create = key_actions.add_parser("create", help="make a key (its secret is in the output, this once)")
    key_create.add_argument("name")
    key_create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="what the key may do (repeat)"
    )
    key_create.add_argument(
        "--rps", type=float, default=0.0, help="sustained requests per second (0: default)"
    )
    key_create.add_argument(
        "--burst", type=int, default=0, help="requests at once above the rate (0: default)"
    )
    key_create.add_argument("--max-streams", type=int, default=0, help="streams open at once (0: default)")
    key_create.add_argument("--ttl-days", type=float, help="days until the key expires (default: never)")
    key_actions.add_parser("list").add_argument("--all", action="store_true", help="revoked and expired too")
    key_actions.add_parser("revoke", help="revoke a key by its id (permanent)").add_argument("id")
    add_speech_commands(groups)
    return root


def add_speech_commands(groups: Any) -> None:
    clone = groups.add_parser(
        "clone", help="a new voice from one recording: profile, sample, transcript, first sentence"
    )
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
    say.add_argument("text", help="what to say (- reads it from stdin)")
    say.add_argument("--voice", required=True, help="a profile's name or id")
    say.add_argument(
        "-o", "--output", help="the audio file (- for stdout: nothing else goes there; default speech.FORMAT)"
    )
    say.add_argument("--format", choices=list(speech_commands.SPEECH_FORMATS), default="wav")
    say.add_argument("--rate", type=int, default=0, help="sample rate in Hz (default 24000)")
    say.add_argument("--seed", type=int, help="the same seed, text and voice give the same audio")
    say.add_argument("--language", default="", help="zh en ja ko de fr ru pt es it (default: detected)")
    say.add_argument("--stream", action="store_true", help="write the audio as it is made")
    say.add_argument("--json", action="store_true", help="the summary as JSON (to stderr with -o -)")

    transcribe = groups.add_parser("transcribe", help="the text of a recording")
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


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    for name in ("file", "ca"):
        path = getattr(args, name, None)
        if path is not None and not path.is_file():
            print(f"error: {path} is not a file", file=sys.stderr)
            sys.exit(exit_codes.USAGE)
    if args.group == "clone" and args.say is not None and args.output is None:
        print("error: --say needs -o FILE (where the first sentence goes)", file=sys.stderr)
        sys.exit(exit_codes.USAGE)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
