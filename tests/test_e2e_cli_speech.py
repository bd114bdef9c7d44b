"""``voice clone``, ``voice say`` and ``voice transcribe`` through the real gateway, in front of the real profile,
TTS (a tiny random-weight model: quick, its audio is noise of the right length) and ASR (Whisper tiny.en)
processes, started as client/tests/client_platform.py starts them for the client library's tests."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client" / "tests"))

from client_platform import Platform, running_platform

from voice_cli.live_audio import live_file
from voice_common.audio import decode_audio
from voice_testing.media_files import encode_file, speechlike
from voice_testing.speech import SENTENCES, speech_wav

pytestmark = pytest.mark.slow

SAID = SENTENCES[0]  # "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("cli-speech")) as started:
        yield started


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recording") / "fox.wav"
    path.write_bytes(speech_wav(SAID, "slt"))
    return path


@pytest.fixture(scope="module")
def voice_name(platform: Platform, recording: Path) -> str:
    """A voice made by ``voice clone`` with the text given, for the say tests."""
    made = voice(platform, "clone", str(recording), "--name", "Say voice", "--text", SAID, "--json")
    assert made.returncode == 0, made.stderr
    return "Say voice"


def voice(
    platform: Platform,
    *args: str,
    key: str | None = None,
    stdin: bytes | None = None,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``voice`` at the platform's gateway with its admin key (or ``key``); stdout as bytes (audio may be there)."""
    script = Path(sys.executable).with_name("voice")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_cli"]
    command += ["--target", platform.target, "--key", key or platform.admin_key]
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOICE_")}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        timeout=120,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        env={**clean, **(environment or {})},
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr.decode()}"
    return result.stdout.decode()


def words_of(text: str) -> set[str]:
    return {word.strip(".,!?").lower() for word in text.split()}


def test_clone_with_the_text_and_a_first_sentence(
    platform: Platform, recording: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first.flac"
    made = json.loads(
        ok(
            voice(
                platform,
                "clone",
                str(recording),
                "--name",
                "Fox",
                "--text",
                SAID,
                "--say",
                "Hello from the fox.",
                "-o",
                str(first),
                "--seed",
                "7",
                "--json",
            )
        )
    )
    assert made["profile"]["name"] == "Fox" and made["profile"]["id"] == made["sample"]["profileId"]
    assert made["sample"]["referenceText"] == SAID
    assert made["sample"]["transcriptState"] == "TRANSCRIPT_STATE_PROVIDED"
    assert (
        made["firstSynthesis"]["path"] == str(first) and int(made["firstSynthesis"]["summary"]["seed"]) == 7
    )
    decoded = decode_audio(first.read_bytes(), target_rate=24000)  # FLAC, from the ending
    assert first.read_bytes()[:4] == b"fLaC"
    assert abs(decoded.duration_seconds - float(made["firstSynthesis"]["summary"]["durationSeconds"])) < 0.05


def test_clone_without_text_waits_for_and_shows_the_machine_transcript(
    platform: Platform, recording: Path
) -> None:
    result = voice(platform, "clone", str(recording), "--name", "Heard fox")
    output = ok(result)
    assert output.startswith('Voice "Heard fox" (')
    heard = next(line for line in output.splitlines() if "text (heard):" in line)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words_of(heard), output
    # No terminal: progress bars are off, and stdout holds only the summary.
    assert b"\r" not in result.stdout


def test_clone_refuses_say_without_an_output_and_a_taken_name(platform: Platform, recording: Path) -> None:
    usage = voice(platform, "clone", str(recording), "--name", "X", "--say", "Hi.")
    assert usage.returncode == 2 and b"needs -o" in usage.stderr
    assert ok(voice(platform, "clone", str(recording), "--name", "Twice", "--text", SAID, "--json"))
    again = voice(platform, "clone", str(recording), "--name", "Twice", "--text", SAID)
    assert again.returncode == 1 and b"ALREADY_EXISTS" in again.stderr, again.stderr


def test_clone_of_a_recording_the_server_refuses_leaves_no_empty_voice(
    platform: Platform, recording: Path, tmp_path: Path
) -> None:
    silent = tmp_path / "silence.wav"
    silent.write_bytes(encode_file(speechlike(3.0, amplitude=0.0), 24000, "wav"))
    refused = voice(platform, "clone", str(silent), "--name", "Silent one", "--text", "Nothing.")
    assert refused.returncode == 1 and b"INVALID_ARGUMENT" in refused.stderr, refused.stderr
    # The name is free again: the retry with a real recording makes the voice.
    made = json.loads(
        ok(voice(platform, "clone", str(recording), "--name", "Silent one", "--text", SAID, "--json"))
    )
    assert made["profile"]["name"] == "Silent one" and made["sample"]["profileId"] == made["profile"]["id"]


def test_say_to_a_file(platform: Platform, voice_name: str, tmp_path: Path) -> None:
    out = tmp_path / "hello.wav"
    line = ok(voice(platform, "say", "Hello there.", "--voice", voice_name, "-o", str(out), "--seed", "3"))
    assert line.startswith(f"{out}: ") and "seed 3" in line
    audio = out.read_bytes()
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    seconds = float(line.split(": ")[1].split(" s")[0])
    assert abs(decode_audio(audio, target_rate=24000).duration_seconds - seconds) < 0.05
    # The same seed, text and voice: the same audio.
    again = tmp_path / "again.wav"
    ok(voice(platform, "say", "Hello there.", "--voice", voice_name, "-o", str(again), "--seed", "3"))
    assert again.read_bytes() == audio


# The first bytes of each --format, and the rate its audio comes back at with --rate 16000.
SIGNATURES = {"wav": b"RIFF", "mp3": b"", "flac": b"fLaC", "opus": b"OggS"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_say_every_format_to_stdout(platform: Platform, voice_name: str, stream: bool) -> None:
    for chosen in ("wav", "mp3", "flac", "opus", "pcm"):
        args = ["say", "-", "--voice", voice_name, "-o", "-", "--format", chosen, "--rate", "16000", "--json"]
        result = voice(platform, *args, *(["--stream"] if stream else []), stdin=b"Read from standard input.")
        assert result.returncode == 0, result.stderr
        audio = result.stdout  # nothing but the audio
        report = json.loads(result.stderr[result.stderr.index(b"{") :])
        assert report["path"] == "stdout" and report["bytes"] == len(audio)
        expected = float(report["summary"]["durationSeconds"])
        if chosen == "pcm":
            assert len(audio) % 2 == 0 and abs(len(audio) / 2 / 16000 - expected) < 0.01
            continue
        assert audio.startswith(SIGNATURES[chosen]), (chosen, audio[:8])
        decoded = decode_audio(audio, target_rate=16000)
        # Codecs pad and trim a little at the ends (MP3's frames, Opus's pre-skip).
        assert abs(decoded.duration_seconds - expected) < 0.1, (chosen, decoded.duration_seconds, expected)


def test_transcribe_in_every_format(platform: Platform, recording: Path) -> None:
    text = ok(voice(platform, "transcribe", str(recording))).strip()
    assert {"quick", "brown", "fox", "river", "bank"} <= words_of(text), text

    full = json.loads(ok(voice(platform, "transcribe", str(recording), "--format", "json", "--words")))
    assert full["language"] == "en" and abs(full["durationSeconds"] - 4.0) < 1.5
    timed = [word for segment in full["segments"] for word in segment["words"]]
    assert len(timed) >= 10 and all(w["endSeconds"] >= w.get("startSeconds", 0.0) for w in timed)

    srt = ok(voice(platform, "transcribe", str(recording), "--format", "srt"))
    assert srt.startswith("1\n00:00:0") and " --> 00:00:0" in srt and "fox" in srt.lower()
    vtt = ok(voice(platform, "transcribe", str(recording), "--format", "vtt", "--words"))
    assert vtt.startswith("WEBVTT\n\n00:00:0")
    cue_lines = [line for line in vtt.splitlines() if " --> " in line]
    assert len(cue_lines) >= 10  # a cue per word
    words_only = ok(voice(platform, "transcribe", str(recording), "--words"))
    assert len(words_only.splitlines()) == len(cue_lines)


def test_transcribe_live_at_real_time_pace(platform: Platform, recording: Path, tmp_path: Path) -> None:
    finals = ok(voice(platform, "transcribe", str(recording), "--live"))
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words_of(finals), finals
    # FLAC: its duration from STREAMINFO, decoded by the ASR service as the stream arrives; twice real time.
    flac = tmp_path / "fox.flac"
    flac.write_bytes(
        encode_file(decode_audio(recording.read_bytes(), target_rate=16000).samples, 16000, "flac")
    )
    body = json.loads(
        ok(voice(platform, "transcribe", str(flac), "--live", "--pace", "2", "--format", "json"))
    )
    assert body["results"] and all(result["isFinal"] for result in body["results"])
    assert {"quick", "brown", "fox"} <= words_of(body["summary"]["text"])
    m4a = tmp_path / "fox.m4a"
    m4a.write_bytes(encode_file(speechlike(1.0, rate=16000), 16000, "m4a"))
    refused = voice(platform, "transcribe", str(m4a), "--live")
    assert refused.returncode == 2 and b"without --live" in refused.stderr


def test_live_files_tell_their_duration_in_their_header(recording: Path, tmp_path: Path) -> None:
    samples = decode_audio(recording.read_bytes(), target_rate=16000).samples
    for kind, ending in (("wav", "wav"), ("flac", "flac"), ("mp3", "mp3"), ("ogg_opus", "ogg")):
        path = tmp_path / f"fox.{ending}"
        path.write_bytes(encode_file(samples, 16000, kind))
        decoded = decode_audio(path.read_bytes(), target_rate=16000).duration_seconds
        # Exact for WAV, FLAC and Ogg Opus; MP3's estimate counts its padding frames too.
        assert abs(live_file(path).duration_seconds - decoded) < 0.2, kind


@pytest.mark.parametrize(("kind", "ending"), [("mp3", "mp3"), ("ogg_opus", "opus")])
def test_transcribe_live_of_compressed_files(
    platform: Platform, recording: Path, tmp_path: Path, kind: str, ending: str
) -> None:
    path = tmp_path / f"fox.{ending}"
    path.write_bytes(
        encode_file(decode_audio(recording.read_bytes(), target_rate=16000).samples, 16000, kind)
    )
    finals = ok(voice(platform, "transcribe", str(path), "--live", "--pace", "4"))
    assert {"quick", "brown", "fox"} <= words_of(finals), finals


def test_on_a_terminal_interim_text_is_redrawn_in_place(platform: Platform, recording: Path) -> None:
    controller, terminal = pty.openpty()
    script = Path(sys.executable).with_name("voice")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_cli"]
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOICE_")}
    process = subprocess.Popen(
        [*command, "--target", platform.target, "--key", platform.admin_key, "transcribe", str(recording), "--live"],
        stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL, env=clean,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    while True:
        try:
            piece = os.read(controller, 4096)
        except OSError:  # the terminal's other end closed: the process has exited
            break
        if not piece:
            break
        shown += piece
    os.close(controller)
    finals = process.stdout.read().decode() if process.stdout else ""
    assert process.wait(timeout=60) == 0, shown
    # Interim guesses overwrite each other on one line ("\r", clear to the end), and are cleared for the finals.
    assert shown.count(b"\r\x1b[K\xe2\x80\xa6 ") >= 1, shown
    assert {"quick", "brown", "fox"} <= words_of(finals) and "\x1b" not in finals


def test_exit_codes(platform: Platform, voice_name: str, recording: Path, tmp_path: Path) -> None:
    unknown = voice(platform, "say", "Hi.", "--voice", "Nobody by this name", "-o", str(tmp_path / "x.wav"))
    assert unknown.returncode == 1 and b"NOT_FOUND" in unknown.stderr, unknown.stderr
    assert not (tmp_path / "x.wav").exists()  # no empty file left behind
    wrong_key = voice(platform, "say", "Hi.", "--voice", voice_name, "-o", "-", key="vk_aaaaaaaa_" + "A" * 43)
    assert wrong_key.returncode == 4 and b"UNAUTHENTICATED" in wrong_key.stderr and wrong_key.stdout == b""
    down = subprocess.run(
        [sys.executable, "-m", "voice_cli", "--target", "127.0.0.1:1", "--key", platform.admin_key,
         "transcribe", str(recording)],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert down.returncode == 3 and b"UNAVAILABLE" in down.stderr, down.stderr
    bad = voice(platform, "say", "Hi.", "--voice", voice_name, "--format", "aiff")
    assert bad.returncode == 2


def test_say_to_stdout_stops_quietly_when_the_reader_goes_and_never_writes_to_a_terminal(
    platform: Platform, voice_name: str
) -> None:
    command = [sys.executable, "-m", "voice_cli", "--target", platform.target, "--key", platform.admin_key]
    # Three sentences of 24 kHz WAV: far more than a pipe holds, so the CLI is still writing when the reader leaves.
    text = "One sentence here. Another sentence there. And a third one."
    player = subprocess.Popen(
        [*command, "say", text, "--voice", voice_name, "--stream", "-o", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert player.stdout is not None and player.stderr is not None
    assert player.stdout.read(100)[:4] == b"RIFF"
    player.stdout.close()  # as `| head -c 100` or a player that is closed
    assert player.wait(timeout=60) == 141
    assert b"Traceback" not in player.stderr.read()

    controller, terminal = pty.openpty()
    refused = subprocess.run(
        [*command, "say", "Hi.", "--voice", voice_name, "-o", "-"],
        stdout=terminal, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    os.close(terminal)
    os.close(controller)
    assert refused.returncode == 2 and b"terminal" in refused.stderr
