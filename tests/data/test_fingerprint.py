"""Caches are keyed by the images' bytes: a copy of a dataset elsewhere, with new mtimes (a new
session's mount, a SLURM job's scratch copy), decodes nothing and searches no near-duplicates
again; changed bytes still build new caches."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermlit.data import cache as cache_module
from dermlit.data import fingerprint
from dermlit.data import near_duplicates as near_duplicates_module
from dermlit.data.cache import ImageCache
from dermlit.data.fingerprint import content_fingerprint, file_digest, stat_fingerprint
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.sources import HAM10000Source


def copied(root: Path, dest: Path) -> Path:
    """``root`` copied to ``dest`` with every file's mtime moved: same bytes, new stat."""
    shutil.copytree(root, dest, copy_function=shutil.copy)
    for path in dest.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))
    return dest


def frame(root: Path) -> pd.DataFrame:
    return HAM10000Source(root).load()[0]


def test_a_copy_elsewhere_keeps_the_content_fingerprint(tiny_ham: Path, tmp_path: Path) -> None:
    original, copy = frame(tiny_ham), frame(copied(tiny_ham, tmp_path / "copy"))
    assert stat_fingerprint(original) != stat_fingerprint(copy)  # what the caches used to key by
    assert content_fingerprint(original, tmp_path / "c") == content_fingerprint(
        copy, tmp_path / "c"
    )


def test_changed_bytes_change_it_and_a_touch_does_not(tiny_ham: Path, tmp_path: Path) -> None:
    df = frame(tiny_ham)
    before = content_fingerprint(df, tmp_path / "c")
    first = Path(df["path"].iloc[0])
    os.utime(first, ns=(10**18, 10**18))  # touched: new stat, same bytes
    assert content_fingerprint(df, tmp_path / "c") == before
    first.write_bytes(first.read_bytes() + b"\0")
    assert content_fingerprint(df, tmp_path / "c") != before


def test_an_unchanged_set_reads_no_bytes(tiny_ham: Path, tmp_path: Path, monkeypatch) -> None:
    df = frame(tiny_ham)
    reads = []
    real = fingerprint.file_digest
    monkeypatch.setattr(fingerprint, "file_digest", lambda p: reads.append(p) or real(p))
    first = content_fingerprint(df, tmp_path / "c")
    assert len(reads) == len(df)
    assert content_fingerprint(df, tmp_path / "c") == first
    assert len(reads) == len(df), "the memo was not used"


def test_file_digest_is_blake2b_of_the_bytes_and_empty_when_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"dermoscopy")
    assert file_digest(str(path)) == hashlib.blake2b(b"dermoscopy", digest_size=16).hexdigest()
    assert file_digest(str(tmp_path / "absent.jpg")) == ""


def test_the_decoded_images_of_a_copy_are_reused(
    tiny_ham: Path, tmp_path: Path, monkeypatch
) -> None:
    ImageCache.build_or_load(frame(tiny_ham), 16, tmp_path / "c")
    decodes = []
    monkeypatch.setattr(cache_module, "load_square", lambda *a: decodes.append(a))
    copy = frame(copied(tiny_ham, tmp_path / "copy"))
    again = ImageCache.build_or_load(copy, 16, tmp_path / "c")
    assert decodes == []
    assert again.array.shape == (len(copy), 16, 16, 3)


def test_the_near_duplicate_search_is_not_repeated_on_a_copy(
    tiny_ham: Path, tmp_path: Path, monkeypatch
) -> None:
    detector = NearDuplicateDetector()
    first = detector.scored_pairs(frame(tiny_ham), tmp_path / "c", None)

    def no_search(*args, **kwargs):
        raise AssertionError("searched the copy again")

    monkeypatch.setattr(near_duplicates_module, "extract_features", no_search)
    copy = frame(copied(tiny_ham, tmp_path / "copy"))
    pd.testing.assert_frame_equal(
        detector.scored_pairs(copy, tmp_path / "c", None), first, check_dtype=False
    )  # read back from the CSV: float64
    with pytest.raises(AssertionError, match="searched the copy again"):  # a real change does
        Path(copy["path"].iloc[0]).write_bytes(b"changed")
        detector.scored_pairs(copy, tmp_path / "c", None)
