"""The descriptor -> hypothesis strategy builder (voice_testing.proto_strategies): what the fuzzing of the public RPCs
draws. No server: the draws themselves are checked."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor_pool, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice.asr.v1 import asr_service_pb2 as asr_pb
from voice.audio.v1 import audio_pb2
from voice.profiles.v1 import generation_ingest_service_pb2 as ingest_pb
from voice.profiles.v1 import profiles_service_pb2 as pb
from voice.tts.v1 import tts_service_pb2 as tts_pb
from voice_gateway.routes import public_routes
from voice_testing.proto_strategies import (
    AUDIO_HEADERS,
    messages,
    mutants,
    real_oneofs,
    request_streams,
    stream_mutants,
)


def drawn(strategy: st.SearchStrategy[Any], count: int = 150) -> list[Any]:
    """``count`` examples of ``strategy`` (fewer when it has fewer distinct ones), reproducibly."""
    examples: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def collect(example: Any) -> None:
        examples.append(example)

    collect()
    return examples


def request_types() -> list[Descriptor]:
    pool = descriptor_pool.Default()
    return [
        pool.FindServiceByName(route.service).methods_by_name[route.name].input_type
        for route in public_routes().values()
    ]


def test_every_public_request_type_draws_messages_that_survive_the_wire() -> None:
    for descriptor in request_types():
        for message in drawn(messages(descriptor), count=15):
            assert message.DESCRIPTOR is descriptor
            assert type(message).FromString(message.SerializeToString()) == message or _has_nan(message)


def _has_nan(message: Any) -> bool:
    """NaN != NaN, so a message holding one never equals its own round trip."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for item in values:
            if isinstance(item, float) and math.isnan(item):
                return True
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if field.message_type is not None and not is_map and _has_nan(item):
                return True
            if is_map and any(isinstance(v, float) and math.isnan(v) for v in value.values()):
                return True
    return False


def test_each_member_of_a_oneof_is_drawn_and_never_two_at_once() -> None:
    examples = drawn(messages(pb.AddSampleRequest.DESCRIPTOR))
    chosen = {message.WhichOneof("payload") for message in examples}
    assert chosen == {None, "metadata", "chunk"}
    for message in drawn(messages(tts_pb.SynthesisConfig.DESCRIPTOR)):
        set_members = [
            f for f in real_oneofs(tts_pb.Voice.DESCRIPTOR)[0].fields if message.voice.HasField(f.name)
        ]
        assert len(set_members) <= 1


def test_scalars_include_their_edges() -> None:
    examples = drawn(messages(tts_pb.SamplingParameters.DESCRIPTOR), count=300)
    temperatures = [m.temperature for m in examples if m.HasField("temperature")]
    assert any(math.isnan(t) for t in temperatures) and any(math.isinf(t) for t in temperatures)
    top_ks = {m.top_k for m in examples if m.HasField("top_k")}
    assert {2**31 - 1, -(2**31), 0, -1} <= top_ks
    # proto3 optional: present and absent both drawn.
    assert {m.HasField("top_k") for m in examples} == {True, False}


def test_strings_are_odd_and_sometimes_far_too_long_but_always_serializable() -> None:
    names = [m.name for m in drawn(messages(pb.CreateProfileRequest.DESCRIPTOR), count=300)]
    assert "" in names and any(len(n) >= 10_000 for n in names)
    assert any(any(ord(c) > 0xFFFF for c in n) for n in names)  # beyond the basic plane
    assert any("\x00" in n for n in names)


def test_bytes_include_audio_headers_then_garbage() -> None:
    contents = [m.content for m in drawn(messages(asr_pb.TranscribeRequest.DESCRIPTOR), count=300)]
    assert b"" in contents
    assert any(c.startswith(header) and len(c) >= len(header) for c in contents for header in AUDIO_HEADERS)


def test_enums_include_numbers_no_name_has() -> None:
    examples = drawn(messages(pb.GetSampleAudioRequest.DESCRIPTOR), count=300)
    encodings = {m.format.encoding for m in examples if m.HasField("format")}
    named = {value.number for value in audio_pb2.AudioEncoding.DESCRIPTOR.values}
    assert encodings & named and encodings - named


def test_maps_and_repeated_fields_get_entries() -> None:
    metadata = drawn(messages(ingest_pb.GenerationMetadata.DESCRIPTOR), count=200)
    assert any(len(m.parameters) > 1 for m in metadata)
    scopes = drawn(messages(pb.UpdateProfileRequest.DESCRIPTOR), count=200)
    assert any(len(m.update_mask.paths) > 1 for m in scopes)


def test_a_field_mask_names_fields_of_the_message_it_masks() -> None:
    paths = {
        p for m in drawn(messages(pb.UpdateProfileRequest.DESCRIPTOR), count=200) for p in m.update_mask.paths
    }
    assert {"name", "description"} & paths
    assert paths - {f.name for f in pb.Profile.DESCRIPTOR.fields}  # and nonsense


def test_recursion_stops_at_the_depth_bound() -> None:
    def depth(value: struct_pb2.Value) -> int:
        kind = value.WhichOneof("kind")
        if kind == "struct_value":
            return 1 + max((depth(v) for v in value.struct_value.fields.values()), default=0)
        if kind == "list_value":
            return 1 + max((depth(v) for v in value.list_value.values), default=0)
        return 0

    examples = drawn(messages(struct_pb2.Value.DESCRIPTOR, max_depth=3), count=200)
    depths = [depth(v) for v in examples]
    assert max(depths) >= 1
    assert max(depths) <= 3


def test_hints_are_drawn_and_overrides_replace_the_generic_values() -> None:
    def hints(field: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        return st.just("profile-that-exists") if field.name == "profile_id" else None

    frames = "voice.tts.v1.SamplingParameters.max_new_tokens"
    examples = drawn(
        messages(tts_pb.SynthesizeRequest.DESCRIPTOR, hints=hints, overrides={frames: st.integers(1, 3)}),
        count=300,
    )
    profile_ids = [m.config.voice.profile_id for m in examples if m.config.voice.HasField("profile_id")]
    assert "profile-that-exists" in profile_ids and set(profile_ids) != {"profile-that-exists"}
    counts = [
        m.config.sampling.max_new_tokens for m in examples if m.config.sampling.HasField("max_new_tokens")
    ]
    assert counts and all(1 <= n <= 3 for n in counts)


def test_client_streams_are_arbitrary_or_led_by_the_first_oneof_member() -> None:
    streams = drawn(request_streams(asr_pb.StreamingTranscribeRequest.DESCRIPTOR, max_messages=4), count=200)
    assert [] in streams and all(len(s) <= 4 for s in streams)
    led = [s for s in streams if s and s[0].WhichOneof("payload") == "config"]
    assert len(led) > len(streams) // 4
    assert any(s and s[0].WhichOneof("payload") != "config" for s in streams)


def test_mutants_keep_most_of_a_working_request_and_change_some_of_it() -> None:
    base = tts_pb.SynthesizeRequest(
        config=tts_pb.SynthesisConfig(voice=tts_pb.Voice(profile_id="p"), language="en"), text="Hello."
    )
    examples = drawn(mutants(base), count=200)
    assert base in examples  # nothing changed
    assert any(m != base for m in examples)
    # Changed inside while the rest stays: the config changed, not replaced, and the text kept.
    assert any(
        m.config != base.config and m.config.language == "en" and m.text == base.text for m in examples
    )
    streams = drawn(
        stream_mutants([pb.AddSampleRequest(chunk=b"a"), pb.AddSampleRequest(chunk=b"b")]), count=100
    )
    assert [pb.AddSampleRequest(chunk=b"a"), pb.AddSampleRequest(chunk=b"b")] in streams
    assert any(len(s) != 2 for s in streams)
