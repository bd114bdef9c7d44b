"""Receiving a client-streamed upload into memory within a size limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voice_common.errors import InvalidArgument


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


async def read_upload(chunks: AsyncIterator[bytes], max_bytes: int, what: str = "the file") -> bytes:
    """Join the chunks, failing as soon as the total passes max_bytes (the rest is never buffered)."""
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise InvalidArgument(
                f"{what} is larger than the {_megabytes(max_bytes)} limit; send a shorter or more compressed file",
                field="chunk",
            )
        parts.append(chunk)
    if total == 0:
        raise InvalidArgument(
            f"{what} is empty: send its bytes in chunk messages after the metadata", field="chunk"
        )
    return b"".join(parts)
