"""``python -m tools.make_test_speech``: (re)make the committed test speech under ``tests/speech/``.

Every (text, voice) pair the ASR tests, the profile transcript tests and the ASR benchmark speak is listed in
:func:`wanted`; each is synthesized with Debian's ``flite`` (voices slt, rms, awb) or ``espeak-ng`` (a language
code as the voice) and stored as FLAC, lossless, at the synthesizer's own rate (flite 16 kHz, espeak-ng 22.05 kHz),
so the tests decode exactly the samples the synthesizer's WAV held. ``manifest.json`` beside the files maps each
text and voice to its file. A recording whose samples did not change is left as it is (no churn in git), and files
no longer listed are removed.

Only this script needs the synthesizers (``apt-get install flite espeak-ng``); the tests read the files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from voice_common.audio import decode_audio
from voice_testing import speech
from voice_testing.speech import Recording

FLITE_VOICES = speech.VOICES
ESPEAK_LANGUAGES = {speech.GERMAN: "de", speech.SPANISH: "es"}


def wanted() -> list[tuple[str, str]]:
    """Every (text, voice) the tests and the benchmark speak, in a stable order."""
    pairs = [(text, voice) for text in speech.SENTENCES for voice in FLITE_VOICES]
    for texts in (speech.LIVE_SHORT, speech.LIVE_LONG):
        pairs += [(text, FLITE_VOICES[index % len(FLITE_VOICES)]) for index, text in enumerate(texts)]
    pairs += [(speech.LIVE_LAST_WORDS, "slt"), (speech.REPEATED, "slt"), (speech.NAMED, "slt")]
    pairs += list(ESPEAK_LANGUAGES.items())
    return list(dict.fromkeys(pairs))


def recording_for(text: str, voice: str) -> Recording:
    slug = "-".join(re.sub(r"[^a-z ]", "", text.lower()).split()[:5])
    digest = hashlib.sha256(f"{voice}\n{text}".encode()).hexdigest()[:8]
    if voice in FLITE_VOICES:
        return Recording(text, voice, "flite", "en", f"flite-{voice}-{slug}-{digest}.flac")
    return Recording(text, voice, "espeak-ng", voice, f"espeak-{voice}-{slug}-{digest}.flac")


def synthesize(recording: Recording, wav: Path) -> tuple[np.ndarray, int]:
    """The synthesizer's 16-bit mono PCM and its rate."""
    if recording.synthesizer == "flite":
        command = ["flite", "-voice", recording.voice, "-t", recording.text, "-o", str(wav)]
    else:
        command = ["espeak-ng", "-v", recording.voice, "-w", str(wav), recording.text]
    subprocess.run(command, check=True)
    with wave.open(str(wav)) as reader:
        if (reader.getnchannels(), reader.getsampwidth()) != (1, 2):
            raise RuntimeError(
                f"{command[0]} wrote {reader.getnchannels()} channels of {reader.getsampwidth()} bytes"
            )
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        return pcm, reader.getframerate()


def store(recording: Recording, pcm: np.ndarray, rate: int, folder: Path) -> bool:
    """Write the FLAC unless it already holds these samples; True when written. Checks that the tests will decode
    the very samples the synthesizer's WAV gives."""
    path = folder / recording.file
    if path.exists():
        held, held_rate = soundfile.read(path, dtype="int16")
        if held_rate == rate and np.array_equal(held, pcm):
            return False
    soundfile.write(path, pcm, rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
    stored, stored_rate = soundfile.read(path, dtype="int16")
    if stored_rate != rate or not np.array_equal(stored, pcm):
        raise RuntimeError(f"{path} does not hold the synthesizer's samples")
    return True


def make(folder: Path, pairs: Sequence[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, str]] = []
    written = 0
    with tempfile.TemporaryDirectory(prefix="test-speech-") as scratch:
        wav = Path(scratch) / "speech.wav"
        for text, voice in pairs:
            recording = recording_for(text, voice)
            pcm, rate = synthesize(recording, wav)
            written += store(recording, pcm, rate, folder)
            manifest.append(
                {
                    "text": recording.text,
                    "voice": recording.voice,
                    "synthesizer": recording.synthesizer,
                    "language": recording.language,
                    "file": recording.file,
                }
            )
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")
    kept = {entry["file"] for entry in manifest}
    removed = [path for path in folder.glob("*.flac") if path.name not in kept]
    for path in removed:
        path.unlink()
    size = sum(path.stat().st_size for path in folder.glob("*.flac"))
    print(
        f"{len(manifest)} recordings in {folder} ({size / 1e6:.2f} MB): {written} written, "
        f"{len(manifest) - written} unchanged, {len(removed)} removed"
    )


def check_decoding(folder: Path) -> None:
    """The corpus's samples equal those of decoding a fresh WAV from the synthesizer, for one clip of each kind."""
    speech.recordings.cache_clear()
    with tempfile.TemporaryDirectory(prefix="test-speech-") as scratch:
        wav = Path(scratch) / "speech.wav"
        for text, voice in ((speech.SENTENCES[0], "slt"), (speech.GERMAN, "de")):
            synthesize(recording_for(text, voice), wav)
            fresh = decode_audio(wav.read_bytes(), target_rate=speech.SAMPLE_RATE).samples
            if not np.array_equal(speech.speak(text, voice), fresh):
                raise RuntimeError(
                    f"the corpus's {voice} speech decodes differently from the synthesizer's WAV"
                )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_test_speech", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", type=Path, default=speech.CORPUS_DIR, help="default: %(default)s")
    arguments = parser.parse_args(argv)
    make(arguments.output, wanted())
    if arguments.output.resolve() == speech.CORPUS_DIR:
        check_decoding(arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
