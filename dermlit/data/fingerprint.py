"""What the caches of an image set are keyed by: the images' bytes, not where they lie.

Datasets get copied: a new session mounts a fresh copy of the shared data, and a SLURM job
copies its data to node-local scratch. A copy has new paths and new modification times, but
every byte is the same. When the key was built from paths and mtimes alone, each copy decoded
the images again and searched them for near-duplicates again. On HAM10000 that cost 2.5 min at
the start of every session's first run.

:func:`content_fingerprint` hashes the bytes of every file. A memo, keyed by the cheap
:func:`stat_fingerprint` (real paths, sizes, mtimes), means an unchanged set costs one ``stat``
per file. A re-copied set is read once (0.5-1.9 s for HAM10000's 10,015 files:
benchmarks/fingerprint_speed.py) and then finds its caches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from dermlit.atomic import write_text_atomic

#: where a cache keeps its memo of stat fingerprint -> content fingerprint
MEMO_DIR = "content-keys"


def stat_fingerprint(df: pd.DataFrame) -> str:
    """A hash of ids, real paths, sizes and modification times: changes when any image changes.

    Paths are resolved first, so the same files reached another way (``main/../shared/x`` vs
    ``/work/shared/x``, a symlink) give the same value."""
    h = hashlib.sha256()
    for image_id, path in df[["image_id", "path"]].itertuples(index=False):
        path = os.path.realpath(path)
        try:
            st = os.stat(path)
            h.update(f"{image_id}|{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{image_id}|{path}|missing\n".encode())
    return h.hexdigest()[:16]


def file_digest(path: str) -> str:
    """BLAKE2b-128 of the file's bytes (the digest ``dermlit data check`` reports), or ``""``
    when it cannot be read: the decoder then says which file and why."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return ""


def content_fingerprint(df: pd.DataFrame, memo_dir: str | os.PathLike) -> str:
    """A hash of the image ids, in ``df``'s order, and each file's bytes: the same for every
    copy of the same images, wherever it lies. ``memo_dir`` keeps the value per
    :func:`stat_fingerprint`, so that an unchanged set reads no bytes."""
    stat = stat_fingerprint(df)
    memo = Path(memo_dir) / MEMO_DIR / f"{stat}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    h = hashlib.sha256()
    for image_id, path in df[["image_id", "path"]].itertuples(index=False):
        h.update(f"{image_id}|{file_digest(str(path))}\n".encode())
    content = h.hexdigest()[:16]
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(memo, content + "\n")
    return content
