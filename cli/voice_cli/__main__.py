"""``voice``: the platform on a command line, through the gateway, built on voice_client.

    voice clone me.wav --name Narrator --say "Hello there." -o first.wav
    voice say "Read this aloud." --voice Narrator -o hello.mp3 --format mp3
    voice transcribe meeting.wav --format srt
    voice profiles list
    voice samples add Narrator recording.m4a --text "What the recording says."
    voice history stats
    voice export Narrator -o narrator.voice.tar
    voice keys create ci --scope tts --scope profiles:read
    voice models status

docs/cli.md is the reference of every command; voice_cli.arguments defines them.

It talks to the gateway (``--target``, env ``VOICE_TARGET``, default 127.0.0.1:50051) with an API key: ``--key``,
else env ``VOICE_API_KEY``, else the admin key ``make run`` saved in ``<VOICE_DATA_DIR or ./data>/admin-api-key``.
The key decides the tenant (the gateway overwrites any tenant a client names), so there is no tenant option.

Every command prints for people (tables, durations) unless ``--json``, which prints the API's messages. Errors
print the gRPC code and message; the exit status says what kind of failure it was (voice_cli.exit_codes).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from voice_cli import exit_codes, speech_commands
from voice_cli.arguments import parser
from voice_cli.live_audio import NotLiveAudio
from voice_client import RetryPolicy, VoiceClient, VoiceError
from voice_common.api_keys import local_key_path

# A command line gives up on a gateway that does not answer after a few seconds of retries (the client's default
# keeps trying for a minute, right for a service, long for a person waiting at a prompt).
CLI_RETRY = RetryPolicy(max_attempts=4, deadline=20.0)
Handler = Callable[[VoiceClient, argparse.Namespace], int]


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


def run(args: argparse.Namespace) -> int:
    """The command's handler with a client, and every way it can fail turned into a message and an exit status."""
    handler: Handler = args.handler
    key, key_source = api_key(args)
    try:
        with VoiceClient(args.target, key, tls=args.tls, ca_file=args.ca, retry=CLI_RETRY) as client:
            return handler(client, args)
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
