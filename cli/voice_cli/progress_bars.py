"""Progress on stderr, and only when stderr is a terminal (tqdm's ``disable=None``): bars for uploads and
downloads, a spinner with the time spent for calls that only answer at the end."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from voice_client import Progress


def upload_bar(path: Path, label: str) -> tuple[tqdm[Any], Callable[[Progress], None]]:
    """A bar over the file's size and the client's ``progress`` callback that advances it; once every byte is
    sent it says the server is still working (checking, normalising)."""
    bar: tqdm[Any] = tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=None
    )

    def advance(progress: Progress) -> None:
        bar.update(progress.done_bytes - bar.n)
        if progress.total_bytes is not None and progress.done_bytes >= progress.total_bytes:
            bar.set_postfix_str("processing on the server…")

    return bar, advance


def download_bar(label: str) -> tuple[tqdm[Any], Callable[[Progress], None]]:
    """A bar whose total is set once the server's header tells it (else it counts bytes)."""
    bar: tqdm[Any] = tqdm(unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=None)

    def advance(progress: Progress) -> None:
        if progress.total_bytes is not None and bar.total != progress.total_bytes:
            bar.total = progress.total_bytes
            bar.refresh()
        bar.update(progress.done_bytes - bar.n)

    return bar, advance


def spinner(label: str) -> tqdm[Any]:
    return tqdm(desc=label, bar_format="{desc} {elapsed}", file=sys.stderr, disable=None)
