"""Files that other processes read while they are written (status.json read by sweep-summary,
metrics.json, cache metadata shared by DDP ranks and parallel jobs): a reader sees the old
content or the new, never a truncated file."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``text`` into ``path`` through a temporary file beside it and one ``os.replace``; the
    temporary file is removed if the write fails (a full disk)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
