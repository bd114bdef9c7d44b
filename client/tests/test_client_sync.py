"""VoiceClient against the real platform (conftest.py): profiles, samples, history, synthesis, transcription,
models and keys, errors with their details, and where the key and address come from."""

from __future__ import annotations

import io
import time
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from client_platform import Platform

from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Progress,
    ReferenceVoice,
    Unauthenticated,
    VoiceClient,
)
from voice_testing.speech import SENTENCE_WER_BAR, SENTENCES, wer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(platform: Platform) -> Iterator[VoiceClient]:
    with VoiceClient(platform.target, platform.admin_key, timeout=120) as opened:
        yield opened


@pytest.fixture(scope="module")
def voice(client: VoiceClient, speech: bytes) -> pb.Profile:
    """A profile with one sample (recorded speech and its text)."""
    profile = client.profiles.create(f"voice {uuid.uuid4().hex[:8]}", language="en")
    client.samples.upload(profile.id, speech, file_name="slt.wav", reference_text=SENTENCES[0])
    return client.profiles.get(profile.id)


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def test_profiles_are_created_paged_updated_resolved_and_deleted(client: VoiceClient) -> None:
    prefix = unique("paged")
    made = [client.profiles.create(f"{prefix} {index}", language="en") for index in range(5)]

    listed = list(client.profiles.list(name_contains=prefix, page_size=2))  # three pages

    assert sorted(profile.id for profile in listed) == sorted(profile.id for profile in made)
    first = made[0]
    assert client.profiles.get(first.id) == first
    assert client.profiles.resolve(first.name.upper()).id == first.id  # names compare without case
    assert client.profiles.resolve(first.id).id == first.id
    updated = client.profiles.update(first.id, description="calm", language="de")
    assert (updated.description, updated.language, updated.name) == ("calm", "de", first.name)
    temporary = client.profiles.create(unique("temporary"), temporary=True, ttl=3600)
    assert temporary.HasField("expire_time")
    assert not client.profiles.update(temporary.id, permanent=True).HasField("expire_time")
    for profile in [*made, temporary]:
        client.profiles.delete(profile.id)
    assert list(client.profiles.list(name_contains=prefix)) == []
    with pytest.raises(NotFound):
        client.profiles.get(first.id)
    with pytest.raises(NotFound, match="no profile is named"):
        client.profiles.find(prefix)


def test_errors_carry_code_message_and_every_field_violation(client: VoiceClient, voice: pb.Profile) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        client.tts.synthesize(
            "", voice.id, language="klingon", temperature=5, top_p=0, sample_rate_hertz=1, speed=9
        )
    error = invalid.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    violations = error.violations_by_field
    assert set(violations) == {
        "text",
        "language",
        "temperature",
        "top_p",
        "output_format.sample_rate_hertz",
        "config.speed",
    }, violations
    assert error.request_id
    assert all(f"{field}: {description}" in str(error) for field, description in violations.items())

    with pytest.raises(InvalidArgument) as bad_id:
        client.profiles.get("not-an-id")
    assert list(bad_id.value.violations_by_field) == ["id"]

    with pytest.raises(NotFound) as missing:
        client.profiles.get(str(uuid.uuid4()))
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and missing.value.message

    name = unique("twice")
    client.profiles.create(name)
    with pytest.raises(AlreadyExists):
        client.profiles.create(name.upper())


def test_a_key_without_the_scope_is_refused_and_a_revoked_key_stops_working(
    client: VoiceClient, platform: Platform
) -> None:
    created = client.keys.create(unique("tts only"), ["tts"], ttl=3600)
    assert created.secret.startswith(created.api_key.prefix)
    assert created.api_key.id in {key.id for key in client.keys.list()}
    with VoiceClient(platform.target, created.secret) as limited:
        with pytest.raises(PermissionDenied, match="profiles:write"):
            limited.profiles.create(unique("refused"))
        revoked = client.keys.revoke(created.api_key.id)
        assert revoked.HasField("revoke_time")
        assert client.keys.revoke(created.api_key.id).revoke_time == revoked.revoke_time  # safe to repeat
        assert created.api_key.id not in {key.id for key in client.keys.list()}
        assert created.api_key.id in {key.id for key in client.keys.list(include_inactive=True)}
        # The gateway caches a key's answer for GATEWAY_KEY_CACHE_SECONDS (0.5 s here).
        with pytest.raises(Unauthenticated, match="revoked"):
            for _ in range(200):
                limited.tts.model_status()


def test_the_address_and_key_come_from_the_environment_or_the_saved_local_key(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICE_API_KEY", raising=False)
    monkeypatch.setenv("VOICE_TARGET", platform.target)
    monkeypatch.setenv("VOICE_DATA_DIR", str(tmp_path))
    with VoiceClient() as nobody:  # no key anywhere
        assert nobody.connection.api_key is None
        assert nobody.connection.key_source == str(tmp_path / "admin-api-key")
        with pytest.raises(Unauthenticated):
            list(nobody.profiles.list())

    (tmp_path / "admin-api-key").write_text(platform.admin_key + "\n")  # as make run saves it
    with VoiceClient() as local:
        assert local.target == platform.target
        assert local.connection.key_source == str(tmp_path / "admin-api-key")
        list(local.profiles.list(page_size=1))

    monkeypatch.setenv("VOICE_API_KEY", "vk_notakey0_" + "x" * 43)
    with VoiceClient() as from_environment:
        assert from_environment.connection.key_source == "VOICE_API_KEY"
        with pytest.raises(Unauthenticated):
            list(from_environment.profiles.list())
    with VoiceClient(api_key=platform.admin_key) as from_argument:  # the argument wins
        list(from_argument.profiles.list(page_size=1))


def test_uploads_report_progress_and_downloads_return_the_audio(
    client: VoiceClient, speech: bytes, tmp_path: Path
) -> None:
    profile = client.profiles.create(unique("uploads"), language="en")
    path = tmp_path / "speech.wav"
    path.write_bytes(speech)
    seen: list[Progress] = []

    from_path = client.samples.upload(
        profile.id, path, reference_text=SENTENCES[0], chunk_bytes=16 * 1024, progress=seen.append
    )

    assert from_path.file_name == "speech.wav" and from_path.mime_type == "audio/x-wav"
    assert len(seen) == -(-len(speech) // (16 * 1024)) > 2
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)
    assert seen[-1] == Progress(len(speech), len(speech))
    from_file = client.samples.upload(profile.id, io.BytesIO(speech), file_name="again.wav")
    assert from_file.transcript_state == pb.TRANSCRIPT_STATE_NEEDED  # the ASR service fills it
    assert {s.id for s in client.samples.list(profile.id)} == {from_path.id, from_file.id}

    original = client.samples.download(from_path.id, original=True)
    assert original.data == speech  # byte for byte
    downloaded: list[Progress] = []
    target = tmp_path / "normalised.wav"
    header = client.samples.download(from_path.id, target, progress=downloaded.append)
    assert header.mime_type == "audio/wav" and header.size_bytes == target.stat().st_size
    assert downloaded[-1].done_bytes == header.size_bytes == downloaded[-1].total_bytes
    with wave.open(str(target)) as normalised:
        assert normalised.getframerate() == 24000
    flac = client.samples.download(from_path.id, encoding="flac", sample_rate_hertz=16000)
    assert flac.data.startswith(b"fLaC") and flac.format.sample_rate_hertz == 16000
    assert client.samples.update_text(from_file.id, "Hello.").transcript_state == pb.TRANSCRIPT_STATE_PROVIDED
    assert client.samples.download_url(from_path.id).url

    client.samples.delete(from_file.id)
    assert [s.id for s in client.samples.list(profile.id)] == [from_path.id]
    with pytest.raises(NotFound):
        client.samples.download(from_file.id)

    archive = io.BytesIO()
    exported: list[Progress] = []
    export = client.profiles.export_archive(profile.id, archive, progress=exported.append)
    assert export.mime_type == "application/x-tar" and exported[-1].done_bytes == len(archive.getvalue())
    archive.seek(0)
    imported = client.profiles.import_archive(archive, name=unique("imported"))
    assert imported.sample_count == 1 and imported.profile.id != profile.id


def test_synthesis_whole_streamed_and_from_text_pieces(client: VoiceClient, voice: pb.Profile) -> None:
    whole = client.tts.synthesize("Hello there.", voice.id, seed=3, max_new_tokens=12)
    assert whole.audio.startswith(b"RIFF") and whole.mime_type == "audio/wav"
    assert whole.sample_rate_hertz == 24000 and whole.summary.seed == 3
    assert whole.summary.duration_seconds == pytest.approx(12 / 12.5, abs=0.1)

    seen: list[Progress] = []
    with client.tts.stream(
        "Hello there.", voice.name, encoding="linear16", max_new_tokens=24, progress=seen.append
    ) as stream:  # by name: the client looks the id up
        chunks = list(stream)
    assert len(chunks) >= 2  # audio came as it was made
    assert stream.format is not None and stream.format.encoding == audio_pb2.AUDIO_ENCODING_LINEAR16
    assert stream.summary is not None
    pcm_seconds = sum(map(len, chunks)) / 2 / 24000
    assert stream.summary.duration_seconds == pytest.approx(pcm_seconds, abs=0.01)
    assert seen[-1].audio_seconds == pytest.approx(pcm_seconds)

    texts = ["Hello ", "there, ", "this arrives ", "in pieces. ", "And ends."]
    duplex = client.tts.duplex(iter(texts), voice.id, max_new_tokens=8, encoding="mp3")
    audio = duplex.read_all()
    assert audio and duplex.summary is not None and duplex.summary.duration_seconds > 0

    inline = client.tts.synthesize(
        "From a clip.",
        ReferenceVoice(client.samples.download(next(client.samples.list(voice.id)).id).data),
        max_new_tokens=6,
    )
    assert inline.audio.startswith(b"RIFF")


def test_stored_synthesis_is_in_the_history(client: VoiceClient, voice: pb.Profile, tmp_path: Path) -> None:
    text = unique("Kept in the history")
    result = client.tts.synthesize(text, voice.id, max_new_tokens=8, store=True)
    generation = client.generations.get(result.summary.generation_id)
    assert (generation.text, generation.profile_id) == (text, voice.id)
    assert [g.id for g in client.generations.list(profile_id=voice.id, text_contains=text)] == [generation.id]
    assert client.generations.stats(profile_id=voice.id).count >= 1
    downloaded = client.generations.download(generation.id, tmp_path / "generation.mp3", encoding="mp3")
    assert downloaded.mime_type == "audio/mpeg" and (tmp_path / "generation.mp3").stat().st_size > 0
    assert client.generations.download_url(generation.id).url
    client.generations.delete(generation.id)
    with pytest.raises(NotFound):
        client.generations.get(generation.id)


def test_transcription_of_bytes_a_file_and_a_stored_sample(
    client: VoiceClient, speech: bytes, voice: pb.Profile, tmp_path: Path
) -> None:
    result = client.asr.transcribe(speech, word_timestamps=True)
    assert wer(SENTENCES[0], result.text) <= SENTENCE_WER_BAR, result.text
    words = [word for segment in result.segments for word in segment.words]
    assert words and all(word.end_seconds >= word.start_seconds for word in words)
    path = tmp_path / "speech.wav"
    path.write_bytes(speech)
    assert not client.asr.transcribe(path).segments[0].words  # no word times unless asked
    sample = next(client.samples.list(voice.id))
    assert wer(SENTENCES[0], client.asr.transcribe_sample(sample.id).text) <= SENTENCE_WER_BAR
    with pytest.raises(InvalidArgument) as invalid:
        client.asr.transcribe(b"not audio at all")
    assert invalid.value.message


def test_live_transcription_yields_interim_and_final_results(
    client: VoiceClient, sentence_pcm: bytes
) -> None:
    def microphone() -> Iterator[bytes]:  # 100 ms pieces at real-time pace, as a microphone gives them
        for start in range(0, len(sentence_pcm), 3200):
            yield sentence_pcm[start : start + 3200]
            time.sleep(0.1)

    sent: list[Progress] = []
    with client.asr.live(microphone(), sample_rate_hertz=16000, progress=sent.append) as live:
        results = list(live)

    assert any(not result.is_final for result in results)  # interim results while the audio kept coming
    finals = [result for result in results if result.is_final]
    assert finals and all(word.end_seconds > 0 for result in finals for word in result.words)
    assert live.summary is not None
    assert wer(SENTENCES[1], live.summary.text) <= SENTENCE_WER_BAR, live.summary.text
    assert sent[-1].done_bytes == len(sentence_pcm)
    assert sent[-1].audio_seconds == pytest.approx(len(sentence_pcm) / 32000)


def test_model_status_and_a_failed_load(client: VoiceClient) -> None:
    assert client.tts.model_status().state == tts_pb.MODEL_STATE_READY
    assert client.asr.model_status().state == tts_pb.MODEL_STATE_READY
    with pytest.raises(NotFound):
        client.tts.load_model("/no/such/model/directory")
    assert client.tts.model_status().state == tts_pb.MODEL_STATE_READY  # the old model serves on
