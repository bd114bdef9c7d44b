"""``voice clone``, ``voice say`` and ``voice transcribe`` through the real gateway, in front of the real profile,
TTS (a tiny random-weight model: quick, its audio is noise of the right length) and ASR (Whisper tiny.en)
processes, started as client/tests/client_platform.py starts them for the client library's tests."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
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


def _arrivals(platform: Platform, *args: str, stdin: bytes) -> tuple[list[tuple[float, int]], float]:
    """Runs ``voice`` and reads its stdout as it comes: (seconds since the start, bytes) for each read, and the
    seconds until the process ended."""
    script = Path(sys.executable).with_name("voice")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "voice_cli"]
    clean = {name: value for name, value in os.environ.items() if not name.startswith("VOICE_")}
    started = time.monotonic()
    process = subprocess.Popen(
        [*command, "--target", platform.target, "--key", platform.admin_key, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(stdin)
    process.stdin.close()
    reads: list[tuple[float, int]] = []
    while piece := os.read(process.stdout.fileno(), 1 << 16):
        reads.append((time.monotonic() - started, len(piece)))
    assert process.wait(timeout=120) == 0, process.stderr.read() if process.stderr else b""
    return reads, time.monotonic() - started


def test_say_stream_writes_its_first_audio_before_the_synthesis_ends(
    platform: Platform, voice_name: str
) -> None:
    # Many seconds of audio, which the tiny model makes over a second or more, piece after piece (12 sentences took
    # only 0.3 s on a Zen 4 EPYC: too little time for the first audio to be out well before the end).
    text = " ".join(f"This is sentence number {number} of the story." for number in range(1, 37)).encode()
    args = ("say", "-", "--voice", voice_name, "-o", "-", "--format", "pcm", "--seed", "1")
    streamed, streamed_end = _arrivals(platform, *args, "--stream", stdin=text)
    whole, whole_end = _arrivals(platform, *args, stdin=text)
    total = sum(size for _, size in streamed)
    assert sum(size for _, size in whole) == total
    # Streamed: the first audio is a small part of it, out well before the process ends (measured: 1.4 s before,
    # on a Zen 4 EPYC). Whole: the audio comes out at the end, only the process's own exit after it (0.1 s).
    first_at, first_bytes = streamed[0]
    assert first_bytes <= total / 3, (first_bytes, total)
    ahead, ahead_whole = streamed_end - first_at, whole_end - whole[0][0]
    assert ahead > 0.4 and ahead - ahead_whole > 0.3, (streamed, streamed_end, whole, whole_end)


def test_say_speed_is_passed_to_the_server_which_checks_its_range(
    platform: Platform, voice_name: str, tmp_path: Path
) -> None:
    seconds = {}
    for speed in ("1", "2"):
        args = [
            "say",
            "Hello there.",
            "--voice",
            voice_name,
            "-o",
            str(tmp_path / f"x{speed}.wav"),
            "--seed",
            "3",
        ]
        report = json.loads(ok(voice(platform, *args, "--speed", speed, "--json")))
        seconds[speed] = float(report["summary"]["durationSeconds"])
    # The tiny model makes the same number of frames either way: twice as fast is half as long.
    assert 0.4 < seconds["2"] / seconds["1"] < 0.6, seconds
    refused = voice(
        platform, "say", "Hi.", "--voice", voice_name, "-o", str(tmp_path / "fast.wav"), "--speed", "9"
    )
    assert refused.returncode == 1 and b"INVALID_ARGUMENT" in refused.stderr and b"speed" in refused.stderr
    assert not (tmp_path / "fast.wav").exists()


def test_history_of_stored_syntheses(platform: Platform, voice_name: str, tmp_path: Path) -> None:
    out = tmp_path / "kept.wav"
    said = "Kept in the history."
    line = ok(voice(platform, "say", said, "--voice", voice_name, "-o", str(out), "--seed", "5", "--store"))
    generation_id = line.strip().split("kept as ")[1]
    listed = ok(voice(platform, "history", "list", "--profile", voice_name)).splitlines()
    assert listed[0].split()[:4] == ["ID", "CREATED", "(UTC)", "PROFILE"]
    row = next(row for row in listed if row.startswith(generation_id))
    assert voice_name in row and said in row and " 5 " in row
    shown = ok(voice(platform, "history", "show", generation_id))
    assert f"text:       {said}" in shown and "seed:       5" in shown, shown
    # The old name of the group still works, and --json gives the API's messages.
    as_json = json.loads(ok(voice(platform, "generations", "list", "--json", "--profile", voice_name)))
    kept = next(g for g in as_json["generations"] if g["id"] == generation_id)
    mp3 = tmp_path / "kept.mp3"
    downloaded = ok(
        voice(
            platform,
            "history",
            "download",
            generation_id,
            "-o",
            str(mp3),
            "--encoding",
            "mp3",
            "--rate",
            "16000",
        )
    )
    assert downloaded.startswith(f"{mp3}: audio/mpeg, "), downloaded
    assert (
        abs(decode_audio(mp3.read_bytes(), target_rate=16000).duration_seconds - kept["durationSeconds"])
        < 0.1
    )

    stats = ok(voice(platform, "history", "stats")).splitlines()
    assert stats[0].split() == ["PROFILE", "GENERATIONS", "AUDIO"]
    assert any(row.startswith(voice_name) for row in stats[1:]) and stats[-1].startswith("total"), stats
    counted = json.loads(ok(voice(platform, "history", "stats", "--profile", voice_name, "--json")))
    assert int(counted["count"]) >= 1 and counted["byProfile"][0]["profileName"] == voice_name

    assert (
        ok(voice(platform, "history", "delete", generation_id)).strip()
        == f"deleted generation {generation_id}"
    )
    assert generation_id not in ok(voice(platform, "history", "list"))
    gone = voice(platform, "history", "show", generation_id)
    assert gone.returncode == 1 and b"NOT_FOUND" in gone.stderr


def test_models_status_load_and_unload(platform: Platform) -> None:
    table = ok(voice(platform, "models", "status")).splitlines()
    assert table[0].split()[:5] == ["SERVICE", "STATE", "MODEL", "DEVICE", "PRECISION"]
    assert [row.split()[:2] for row in table[1:]] == [["tts", "ready"], ["asr", "ready"]], table
    tts = json.loads(ok(voice(platform, "models", "status", "tts", "--json")))["tts"]
    assert tts["state"] == "MODEL_STATE_READY" and tts["model"] and tts["device"] == "cpu"

    # Loading and unloading need the admin scope: a TTS key is refused with exit 4.
    secret = json.loads(ok(voice(platform, "keys", "create", "speaker", "--scope", "tts", "--json")))[
        "secret"
    ]
    denied = voice(platform, "models", "unload", "tts", key=secret)
    assert denied.returncode == 4 and b"PERMISSION_DENIED" in denied.stderr, denied.stderr

    unloaded = json.loads(ok(voice(platform, "models", "unload", "tts", "--json")))["tts"]
    assert unloaded["state"] == "MODEL_STATE_NOT_LOADED"
    loaded = ok(voice(platform, "models", "load", "tts")).splitlines()  # the configured model again
    assert loaded[1].split()[:2] == ["tts", "ready"] and tts["model"] in loaded[1], loaded
