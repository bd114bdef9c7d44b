"""Hypothesis strategies for protobuf messages, built from their descriptors (the fuzz tests of every public RPC).

``hypothesis-protobuf`` no longer works with current protobuf, and a hand-written strategy per message would miss a
field added later: :func:`messages` walks any ``Descriptor`` and draws every field by its type, edge values
included::

    from voice_testing.proto_strategies import messages, request_streams

    @given(messages(pb.GetProfileRequest.DESCRIPTOR))
    def test_get_profile(request): ...

What is drawn, and why:

* scalars over their whole range, with the edges a handler must survive drawn often: 0, -1, the type's minimum
  and maximum; floats also NaN, ±inf, -0.0, subnormals and huge values (a ``float`` field gets 32-bit values).
* strings: short odd unicode (combining marks, right-to-left, emoji, NUL, other scripts), path and injection
  look-alikes, and now and then a very long one. Lone surrogates are never drawn: protobuf cannot serialize them,
  so no client can send one.
* bytes: random bytes, and the first bytes of real audio containers (RIFF/WAVE, fLaC, ID3, an MPEG frame sync,
  OggS) followed by garbage, so a decoder gets past its first check.
* enums: every named value and numbers no name has (proto3 enums are open: a client built from a newer proto
  sends them).
* nested messages recursively down to ``max_depth`` (deeper ones stay unset); repeated fields and maps with a few
  entries; each real oneof with at most one member set (or none); a proto3 ``optional`` field present or absent.
* ``google.protobuf.FieldMask`` paths from the names of the fields of the message beside it (the one it masks),
  plus nonsense, so an update gets past its mask check as often as not.

``hints`` lets a test put its own values in front of the generic ones (ids of resources that exist, a real audio
clip): for each field it may return a strategy that is drawn about half the time instead of the generic one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, OneofDescriptor
from hypothesis import strategies as st

# A message type's descriptor: ``Message.DESCRIPTOR`` is typed as either of protobuf's two implementations.
MessageDescriptor = Descriptor | Any
Hints = Callable[[FieldDescriptor], st.SearchStrategy[Any] | None]
"""For a field, a strategy of the test's own values (drawn instead of the generic ones about half the time), or
None."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_UINT64: _UINT64,
    FieldDescriptor.TYPE_FIXED64: _UINT64,
}

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n\r",
    "e\u0301\u0301\u0301",  # combining marks piled on one letter
    "\u202eevil\u202c",  # right-to-left override
    "\ufeff",
    "\U0001f600\U0001f469\u200d\U0001f4bb",  # emoji with a zero-width joiner
    "日本語のテキスト",
    "مرحبا",
    "../../etc/passwd",
    "' OR 1=1 --",
    "%s%n%x",
    "${jndi:x}",
    "*",
    "\uffff\U0010ffff",
)
# The first bytes of real audio containers: a decoder gets past its first check and meets garbage after it.
AUDIO_HEADERS = (
    b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00"
    b"data\x00\x00\x00\x00",
    b"RIFF\xff\xff\xff\xffWAVE",
    b"fLaC\x00\x00\x00\x22",
    b"ID3\x04\x00\x00\x00\x00\x00\x00",
    b"\xff\xfb\x90\x64",
    b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM
    b"\x00\x00\x00\x20ftypM4A ",
)

_TEXT = st.characters(exclude_categories=["Cs"])  # no lone surrogates: protobuf cannot serialize them


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({low, high, 0, 1} | ({-1} if low < 0 else set()))
    return st.one_of(
        st.sampled_from(edges),
        st.integers(low, high),
        st.integers(-1000, 1000).filter(lambda n: low <= n <= high),
    )


def _floats(width: int) -> st.SearchStrategy[float]:
    edges = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-45 if width == 32 else 5e-324]
    edges.append(3.4e38 if width == 32 else 1.7e308)
    return st.one_of(
        st.sampled_from(edges),
        st.floats(width=width),  # type: ignore[arg-type]
        st.floats(-100.0, 100.0, width=width),  # type: ignore[arg-type]
    )


def _is_optional(oneof: OneofDescriptor) -> bool:
    """A proto3 ``optional`` field's synthetic oneof (``_name`` holding only ``name``), not a real one."""
    fields = list(oneof.fields)
    return len(fields) == 1 and oneof.name == f"_{fields[0].name}"


def real_oneofs(descriptor: MessageDescriptor) -> list[OneofDescriptor]:
    return [oneof for oneof in descriptor.oneofs if not _is_optional(oneof)]


class _Builder:
    def __init__(
        self,
        hints: Hints | None,
        max_depth: int,
        max_repeated: int,
        max_text: int,
        max_bytes: int,
        overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    ) -> None:
        self.hints = hints
        self.overrides = dict(overrides or {})
        self.max_depth = max_depth
        self.max_repeated = max_repeated
        self.max_text = max_text
        self.max_bytes = max_bytes

    def strings(self) -> st.SearchStrategy[str]:
        return st.one_of(
            st.sampled_from(ODD_STRINGS),
            st.text(_TEXT, max_size=self.max_text),
            st.text(st.characters(codec="ascii"), max_size=self.max_text),
            # Now and then far longer than any limit.
            st.integers(1, 4).map(lambda k: "x" * (10_000 * k)),
        )

    def binaries(self) -> st.SearchStrategy[bytes]:
        garbage = st.binary(max_size=self.max_bytes)
        return st.one_of(
            garbage,
            st.tuples(st.sampled_from(AUDIO_HEADERS), garbage).map(lambda parts: parts[0] + parts[1]),
            st.sampled_from((b"", b"\x00", b"\xff" * 64)),
        )

    def scalar(self, field: FieldDescriptor) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind in _INT_RANGES:
            return _integers(*_INT_RANGES[kind])
        if kind == FieldDescriptor.TYPE_DOUBLE:
            return _floats(64)
        if kind == FieldDescriptor.TYPE_FLOAT:
            return _floats(32)
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind == FieldDescriptor.TYPE_STRING:
            return self.strings()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self.binaries()
        if kind == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            named = [value.number for value in field.enum_type.values]
            unknown = st.integers(*_INT32).filter(lambda n: n not in named)
            return st.one_of(
                st.sampled_from(named), st.sampled_from((-1, max(named) + 1, 2**31 - 1)), unknown
            )
        raise TypeError(f"{field.full_name}: no strategy for field type {kind}")

    def value(self, field: FieldDescriptor, depth: int, siblings: Descriptor) -> st.SearchStrategy[Any]:
        """One value of ``field`` (one element of a repeated field)."""
        if field.full_name in self.overrides:
            return self.overrides[field.full_name]
        if field.message_type is not None:
            generic = self.message(field.message_type, depth + 1, siblings)
        else:
            generic = self.scalar(field)
        hinted = self.hints(field) if self.hints is not None else None
        if hinted is None:
            return generic
        return st.one_of(hinted, generic)

    def field_mask_paths(self, masked: Descriptor) -> st.SearchStrategy[list[str]]:
        names = [field.name for field in masked.fields] or ["name"]
        for field in masked.fields:
            if field.message_type is not None and not field.message_type.GetOptions().map_entry:
                names += [f"{field.name}.{inner.name}" for inner in field.message_type.fields]
        return st.lists(
            st.one_of(st.sampled_from(names), st.sampled_from(ODD_STRINGS), st.text(_TEXT, max_size=20)),
            max_size=self.max_repeated,
        )

    def message(
        self,
        descriptor: Descriptor,
        depth: int,
        siblings: Descriptor | None = None,
        forced: dict[str, str] | None = None,
    ) -> st.SearchStrategy[Any]:
        """Messages of ``descriptor``; ``forced``: oneof name -> the member that is always set."""
        cls = message_factory.GetMessageClass(descriptor)
        if depth > self.max_depth:
            return st.just(cls())
        if descriptor.full_name == "google.protobuf.FieldMask" and siblings is not None:
            return self.field_mask_paths(siblings).map(lambda paths: cls(paths=paths))
        # The message a FieldMask in this one masks: the first other message field beside it.
        masked = next(
            (
                f.message_type
                for f in descriptor.fields
                if f.message_type is not None and f.message_type.full_name != "google.protobuf.FieldMask"
            ),
            descriptor,
        )
        oneofs = real_oneofs(descriptor)

        @st.composite
        def draw_message(draw: st.DrawFn) -> Any:
            message = cls()
            chosen: set[str] = set()
            for oneof in oneofs:
                if forced and oneof.name in forced:
                    chosen.add(forced[oneof.name])
                    continue
                pick = draw(st.sampled_from([None, *[member.name for member in oneof.fields]]))
                if pick is not None:
                    chosen.add(pick)
            for field in descriptor.fields:
                container = field.containing_oneof
                if container is not None and not _is_optional(container):
                    if field.name not in chosen:
                        continue
                elif not draw(st.booleans()):
                    continue  # left unset (the default, or absent)
                self.set_field(draw, message, field, depth, masked)
            return message

        return draw_message()

    def set_field(
        self, draw: st.DrawFn, message: Any, field: FieldDescriptor, depth: int, masked: Descriptor
    ) -> None:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key_field = entry.fields_by_name["key"]
            value_field = entry.fields_by_name["value"]
            entries = draw(
                st.dictionaries(
                    self.value(key_field, depth, masked),
                    self.value(value_field, depth, masked),
                    max_size=self.max_repeated,
                )
            )
            target = getattr(message, field.name)
            for key, value in entries.items():
                if value_field.message_type is not None:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
            return
        if field.is_repeated:
            values = draw(st.lists(self.value(field, depth, masked), max_size=self.max_repeated))
            target = getattr(message, field.name)
            if field.message_type is not None:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
            return
        value = draw(self.value(field, depth, masked))
        if field.message_type is not None:
            getattr(message, field.name).CopyFrom(value)
        else:
            setattr(message, field.name, value)


def messages(
    descriptor: MessageDescriptor,
    *,
    hints: Hints | None = None,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    max_depth: int = 4,
    max_repeated: int = 4,
    max_text: int = 40,
    max_bytes: int = 256,
) -> st.SearchStrategy[Any]:
    """Messages of ``descriptor``'s type with any of their fields set (see the module docstring). ``max_text`` and
    ``max_bytes`` bound the ordinary draws; a few edge strings are longer on purpose. ``overrides``: field full
    name -> the only strategy for it (a limit the test must keep, such as a synthesis's frame count)."""
    return _Builder(hints, max_depth, max_repeated, max_text, max_bytes, overrides).message(descriptor, 0)


def request_streams(
    descriptor: MessageDescriptor,
    *,
    hints: Hints | None = None,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    max_messages: int = 4,
    max_depth: int = 4,
    max_repeated: int = 4,
    max_text: int = 40,
    max_bytes: int = 256,
) -> st.SearchStrategy[list[Any]]:
    """The messages of a client stream: any sequence (empty included), or, as often, one shaped the way the
    method expects, whose first message sets the first member of the first oneof (the metadata or config that
    leads an upload or a live stream) and the rest whatever else is drawn."""
    builder = _Builder(hints, max_depth, max_repeated, max_text, max_bytes, overrides)
    anything = builder.message(descriptor, 0)
    arbitrary = st.lists(anything, max_size=max_messages)
    oneofs = real_oneofs(descriptor)
    if not oneofs:
        return arbitrary
    leader = {oneofs[0].name: oneofs[0].fields[0].name}
    shaped = st.tuples(
        builder.message(descriptor, 0, forced=leader), st.lists(anything, max_size=max_messages - 1)
    ).map(lambda parts: [parts[0], *parts[1]])
    return st.one_of(arbitrary, shaped)


def mutants(
    base: Any,
    *,
    hints: Hints | None = None,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    max_depth: int = 4,
    max_repeated: int = 4,
    max_text: int = 40,
    max_bytes: int = 256,
) -> st.SearchStrategy[Any]:
    """``base`` (a request that works) with some of its fields, at any depth, replaced by drawn ones: the drawn
    values reach the checks and code paths behind the first refusal, which requests drawn whole rarely get past."""
    builder = _Builder(hints, max_depth, max_repeated, max_text, max_bytes, overrides)

    def mutated(message: Any, depth: int) -> st.SearchStrategy[Any]:
        drawn = builder.message(message.DESCRIPTOR, depth)

        @st.composite
        def draw_mutant(draw: st.DrawFn) -> Any:
            result = type(message)()
            result.CopyFrom(message)
            other = draw(drawn)
            for field, value in other.ListFields():
                if not draw(st.booleans()):
                    continue
                singular_message = field.message_type is not None and not field.is_repeated
                if singular_message and result.HasField(field.name) and draw(st.booleans()):
                    # Deeper: keep the working message and change some of its own fields.
                    inner = draw(mutated(getattr(result, field.name), depth + 1))
                    getattr(result, field.name).CopyFrom(inner)
                    continue
                result.ClearField(field.name)
                if field.is_repeated:
                    getattr(result, field.name).MergeFrom(value)
                elif singular_message:
                    getattr(result, field.name).CopyFrom(value)
                else:
                    setattr(result, field.name, value)
            # Now and then a field the working request sets is left out.
            present = [field.name for field, _ in result.ListFields()]
            if present and draw(st.integers(0, 3)) == 0:
                result.ClearField(draw(st.sampled_from(present)))
            return result

        return draw_mutant()

    return mutated(base, 0)


def stream_mutants(base: list[Any], **limits: Any) -> st.SearchStrategy[list[Any]]:
    """A client stream that works, with some of its messages changed (:func:`mutants`), and perhaps cut short or
    followed by one more drawn message."""
    if not base:
        return st.just([])
    changed = st.tuples(*[st.one_of(st.just(message), mutants(message, **limits)) for message in base])
    extra = messages(base[0].DESCRIPTOR, **limits)

    @st.composite
    def draw_stream(draw: st.DrawFn) -> list[Any]:
        stream = list(draw(changed))
        if draw(st.integers(0, 3)) == 0:
            stream = stream[: draw(st.integers(0, len(stream)))]
        if draw(st.integers(0, 3)) == 0:
            stream.insert(draw(st.integers(0, len(stream))), draw(extra))
        return stream

    return draw_stream()
