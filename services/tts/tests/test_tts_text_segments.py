"""Splitting text into speakable pieces, whole or as it streams in."""

from __future__ import annotations

import pytest

from voice_tts.text_segments import IncrementalSegmenter, split_text


def test_short_text_is_one_piece() -> None:
    assert split_text("Hello there. How are you?") == ["Hello there. How are you?"]


def test_long_text_splits_at_sentence_ends() -> None:
    text = "First sentence here. Second one is longer than that! Third? Fourth."
    pieces = split_text(text, max_chars=32)
    assert pieces == ["First sentence here.", "Second one is longer than that!", "Third? Fourth."]
    assert " ".join(pieces) == text


def test_cjk_sentence_marks_need_no_space() -> None:
    assert split_text("你好。今天天气很好！我们去公园吧？", max_chars=8) == [
        "你好。",
        "今天天气很好！",
        "我们去公园吧？",
    ]


def test_a_sentence_too_long_is_cut_at_clauses_then_words() -> None:
    text = "This sentence rambles on, and on, and then keeps going without any full stop at all for a while"
    pieces = split_text(text, max_chars=30)
    assert all(len(p) <= 30 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert pieces[0] == "This sentence rambles on,"


def test_text_without_spaces_is_cut_hard() -> None:
    pieces = split_text("字" * 25, max_chars=10)
    assert [len(p) for p in pieces] == [10, 10, 5]


def test_blank_text_gives_nothing() -> None:
    assert split_text("  \n\n ") == []
    with pytest.raises(ValueError):
        split_text("x", max_chars=0)


def feed_all(fragments: list[str], **kwargs: int) -> list[tuple[int, str]]:
    """(index of the fragment after which a piece came out, piece)."""
    segmenter = IncrementalSegmenter(**kwargs)
    out = [(i, piece) for i, fragment in enumerate(fragments) for piece in segmenter.feed(fragment)]
    out += [(len(fragments), piece) for piece in segmenter.finish()]
    return out


def test_pieces_come_out_as_soon_as_a_sentence_is_complete() -> None:
    tokens = ["Hel", "lo the", "re.", " How", " are", " you?", " Fine"]
    assert feed_all(tokens) == [(3, "Hello there."), (6, "How are you?"), (7, "Fine")]


def test_a_decimal_point_is_not_a_sentence_end() -> None:
    assert feed_all(["It costs 3.", "5 euros. ", "Ok"]) == [(1, "It costs 3.5 euros."), (3, "Ok")]


def test_cjk_pieces_are_released_at_once() -> None:
    assert feed_all(["你好。", "再见"]) == [(0, "你好。"), (2, "再见")]


def test_a_long_run_without_sentence_end_is_released_in_clauses() -> None:
    words = ["word "] * 30
    out = feed_all(words, max_chars=40)
    assert out[0][0] < len(words)  # something came out before the end
    assert all(len(piece) <= 40 for _, piece in out)
    assert " ".join(piece for _, piece in out).split() == ["word"] * 30
