"""``voice clone``, ``voice say`` and ``voice transcribe``: the platform's speech through voice_client.

Human output by default; ``--json`` (``--format json`` for transcribe) prints the API's messages as JSON for
scripts. Progress and status go to stderr, so stdout carries only the result (with ``-o -``, only the audio).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf.json_format import MessageToDict, MessageToJson
from google.protobuf.message import Message
from tqdm import tqdm

from voice.profiles.v1 import profiles_service_pb2 as pb
from voice_cli.live_audio import live_file, paced_pieces
from voice_cli.progress_bars import spinner, upload_bar
from voice_client import VoiceClient, transcript_formats

# --format names (those of OpenAI's speech API) to the client's encodings.
SPEECH_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "ogg_opus", "pcm": "linear16"}
TRANSCRIPT_POLL_SECONDS = 0.5


class UsageError(ValueError):
    """A command line that cannot work as given (exit status 2)."""


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message)


def _wait_for_transcript(client: VoiceClient, sample: pb.Sample, timeout_seconds: float) -> pb.Sample | None:
    """Polls the profile's samples until the ASR service has written this one's transcript (None: not in time),
    with a spinner on stderr."""
    deadline = time.monotonic() + timeout_seconds
    with spinner("transcribing") as waiting:
        while time.monotonic() < deadline:
            for listed in client.samples.list(sample.profile_id):
                if listed.id == sample.id and listed.transcript_state == pb.TRANSCRIPT_STATE_MACHINE:
                    return listed
            time.sleep(TRANSCRIPT_POLL_SECONDS)
            waiting.update()
    return None


def clone(client: VoiceClient, args: argparse.Namespace) -> int:
    profile = client.profiles.create(args.name, language=args.language, description=args.description)
    bar, advance = upload_bar(args.file, "upload")
    try:
        with bar:
            sample = client.samples.upload(profile.id, args.file, reference_text=args.text, progress=advance)
    except BaseException:
        # A voice without its recording is no use, and its name would refuse the next try: remove it.
        client.profiles.delete(profile.id)
        raise
    transcript_ready = sample.transcript_state != pb.TRANSCRIPT_STATE_NEEDED
    if not transcript_ready and args.wait > 0:
        written = _wait_for_transcript(client, sample, args.wait)
        if written is not None:
            sample, transcript_ready = written, True
    first: dict[str, Any] | None = None
    if args.say is not None:
        spoken = client.tts.synthesize(
            args.say, voice=profile.id, language=args.language if args.language != "auto" else "",
            encoding=SPEECH_FORMATS[_format_of(args.output)], seed=args.seed,
        )  # fmt: skip
        args.output.write_bytes(spoken.audio)
        first = {"path": str(args.output), "summary": _as_dict(spoken.summary)}
    if args.json:
        result: dict[str, Any] = {"profile": _as_dict(profile), "sample": _as_dict(sample)}
        if first is not None:
            result["firstSynthesis"] = first
        print(json.dumps(result, indent=2))
        return 0
    print(f'Voice "{profile.name}" ({profile.id})')
    print(f"  sample {sample.id}: {sample.duration_seconds:.1f} s from {sample.file_name}")
    for warning in sample.warnings:
        print(f"  warning: {warning.message}")
    if sample.transcript_state == pb.TRANSCRIPT_STATE_PROVIDED:
        print(f"  text (yours): {sample.reference_text}")
    elif transcript_ready:
        print(f"  text (heard): {sample.reference_text}")
    else:
        print(f"  text: not transcribed within {args.wait:g} s; the ASR service will still fill it in")
    if first is not None:
        seconds = first["summary"].get("durationSeconds", 0.0)
        print(f"  first sentence: {args.output} ({float(seconds):.1f} s)")
    return 0


def _format_of(output: Path) -> str:
    """``--say``'s format, from the output's ending (WAV when it has no known one)."""
    ending = output.suffix.lower().lstrip(".")
    return (
        {"ogg": "opus", "raw": "pcm"}.get(ending, ending)
        if ending in {*SPEECH_FORMATS, "ogg", "raw"}
        else "wav"
    )


def say(client: VoiceClient, args: argparse.Namespace) -> int:
    to_stdout = args.output == "-"
    if to_stdout and sys.stdout.isatty():
        raise UsageError("-o - would write audio to the terminal: pipe it to a player or a file")
    text = sys.stdin.read() if args.text == "-" else args.text
    output = Path(args.output) if args.output else Path(f"speech.{args.format}")
    options: dict[str, Any] = {
        "language": args.language,
        "seed": args.seed,
        "encoding": SPEECH_FORMATS[args.format],
        "sample_rate_hertz": args.rate,
        "speed": args.speed,  # the server checks the range (0.25-4.0) and says so
        "store": args.store,
    }
    sink: BinaryIO = sys.stdout.buffer if to_stdout else output.open("wb")
    try:
        if args.stream:
            with (
                tqdm(unit="B", unit_scale=True, desc="synthesis", file=sys.stderr, disable=None) as bar,
                client.tts.stream(text, voice=args.voice, **options) as stream,
            ):
                for chunk in stream:
                    sink.write(chunk)
                    sink.flush()  # a player on the other end of a pipe starts at once
                    bar.update(len(chunk))
            summary = stream.summary
            size = stream.received_bytes
        else:
            with spinner("synthesis"):
                result = client.tts.synthesize(text, voice=args.voice, **options)
            sink.write(result.audio)
            summary, size = result.summary, len(result.audio)
    except BaseException:
        if not to_stdout:
            sink.close()
            output.unlink(missing_ok=True)
        raise
    if not to_stdout:
        sink.close()
    seconds = summary.duration_seconds if summary is not None else 0.0
    where = "stdout" if to_stdout else str(output)
    report = sys.stderr if to_stdout else sys.stdout
    if args.json:
        details = {"path": where, "bytes": size, "summary": _as_dict(summary) if summary else {}}
        print(json.dumps(details, indent=2), file=report)
    else:
        seed = f", seed {summary.seed}" if summary is not None else ""
        kept = f", kept as {summary.generation_id}" if summary is not None and summary.generation_id else ""
        print(f"{where}: {seconds:.2f} s of {args.format}, {size} bytes{seed}{kept}", file=report)
    return 0


def transcribe(client: VoiceClient, args: argparse.Namespace) -> int:
    chosen = "json" if args.json else args.format
    if args.live:
        return _transcribe_live(client, args, chosen)
    with spinner("transcription"):
        result = client.asr.transcribe(args.file, language=args.language, word_timestamps=args.words)
    if chosen == "json":
        print(MessageToJson(result, indent=2))
        return 0
    found = transcript_formats.cues(result.segments, words=args.words)
    print(_render(chosen, result.text.strip(), found, args.words))
    return 0


def _render(chosen: str, text: str, found: list[transcript_formats.Cue], words: bool) -> str:
    if chosen == "srt":
        return transcript_formats.srt(found)
    if chosen == "vtt":
        return transcript_formats.vtt(found)
    return transcript_formats.word_lines(found) if words else text


def _transcribe_live(client: VoiceClient, args: argparse.Namespace, chosen: str) -> int:
    audio = live_file(args.file)
    # Interim text is redrawn in place on a terminal; elsewhere (a log, a pipe) only the finals are shown.
    interim_shown = sys.stderr.isatty()
    finals = []
    pieces = paced_pieces(audio, speed=args.pace)
    with client.asr.live(
        pieces, encoding=audio.encoding, sample_rate_hertz=0, language=args.language,
        word_timestamps=args.words, interim_results=interim_shown,
    ) as live:  # fmt: skip
        for update in live:
            if not update.is_final:
                if interim_shown:
                    sys.stderr.write(f"\r\033[K… {update.text.strip()}")
                    sys.stderr.flush()
                continue
            if interim_shown:
                sys.stderr.write("\r\033[K")
            finals.append(update)
            if chosen == "text" and not args.words:
                print(update.text.strip(), flush=True)
    summary = live.summary
    if chosen == "json":
        body = {
            "results": [_as_dict(final) for final in finals],
            "summary": _as_dict(summary) if summary is not None else {},
        }
        print(json.dumps(body, indent=2))
    elif chosen != "text" or args.words:
        text = summary.text.strip() if summary is not None else ""
        print(_render(chosen, text, transcript_formats.cues(finals, words=args.words), args.words))
    return 0
