"""Cutting text into pieces the model speaks one after another.

Long text is split at sentence ends so every piece stays within what the model handles well, and the voice and
seed lineage carry across pieces (the synthesis engine's job). For duplex synthesis, text arrives in fragments (an LLM's
tokens); ``IncrementalSegmenter`` releases a piece as soon as a sentence is complete, or a clause once the buffer
grows long, so audio can start before the text is finished.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Sentence ends in the Qwen3-TTS languages: Latin and Cyrillic punctuation followed by space, and the CJK full-width
# marks, which need no space after them.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？；])[\"'”’」』）]*\s*|\n\s*\n|\n")
# Weaker breaks for a sentence that is too long on its own.
_CLAUSE_END = re.compile(r"(?<=[,;:，、；：—])\s*")


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    parts: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        end = match.end()
        if end > start:
            parts.append(text[start:end])
            start = end
    if start < len(text):
        parts.append(text[start:])
    return parts


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """A sentence longer than max_chars: cut at clause marks, then at spaces, then (CJK without spaces) anywhere."""
    out: list[str] = []
    current = ""
    for clause in _pieces(sentence, _CLAUSE_END):
        if len(current) + len(clause) <= max_chars:
            current += clause
            continue
        if current:
            out.append(current)
        current = ""
        while len(clause) > max_chars:
            cut = clause.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            out.append(clause[:cut])
            clause = clause[cut:]
        current = clause
    if current:
        out.append(current)
    return out


def split_text(text: str, max_chars: int = 200) -> list[str]:
    """Pieces of at most ``max_chars`` characters, cut at sentence ends where possible; whitespace-only pieces are
    dropped and each piece is stripped. Joining the pieces with spaces gives the text back (up to whitespace)."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces: list[str] = []
    current = ""
    for sentence in _pieces(text, _SENTENCE_END):
        if len(sentence.strip()) > max_chars:
            if current.strip():
                pieces.append(current)
            current = ""
            pieces.extend(_split_long(sentence, max_chars))
        elif len(current) + len(sentence) <= max_chars:
            current += sentence
        else:
            if current.strip():
                pieces.append(current)
            current = sentence
    if current.strip():
        pieces.append(current)
    return [piece.strip() for piece in pieces if piece.strip()]


class IncrementalSegmenter:
    """Feed text fragments; get speakable pieces as soon as they are complete; ``finish`` flushes the rest."""

    def __init__(self, max_chars: int = 200, min_chars: int = 1) -> None:
        self._max = max_chars
        self._min = min_chars
        self._buffer = ""

    def feed(self, fragment: str) -> Iterator[str]:
        self._buffer += fragment
        # Release up to the last sentence end. A Latin full stop counts only once a space follows it: the next
        # fragment might turn "3." into "3.5".
        cut = 0
        for match in _SENTENCE_END.finditer(self._buffer):
            cut = match.end()
        if cut and len(self._buffer[:cut].strip()) >= self._min:
            released, self._buffer = self._buffer[:cut], self._buffer[cut:]
            yield from split_text(released, self._max)
        if len(self._buffer) > self._max:
            # No sentence end in sight: speak up to the last clause or word break within the limit.
            *ready, self._buffer = _split_long(self._buffer, self._max)
            for piece in ready:
                if piece.strip():
                    yield piece.strip()

    def finish(self) -> Iterator[str]:
        rest, self._buffer = self._buffer, ""
        yield from split_text(rest, self._max)
