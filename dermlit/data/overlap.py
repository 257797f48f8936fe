"""Images shared by two datasets: ISIC 2019's training set contains HAM10000, so training on
one and testing on the other leaks unless the shared images are found (from the bytes and the
pixels; image ids need not agree across releases).

:func:`find_overlap` lists exact (byte-identical) and near-duplicate pairs between two index
tables; :func:`warn_training_overlap` is what ``dermlit-eval`` calls on external data.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from dermlit.data.fingerprint import content_fingerprint, file_digest
from dermlit.data.image_features import extract_features
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.validation import describe_ids

log = logging.getLogger(__name__)
COLUMNS = ["image_a", "image_b", "match", "similarity", "label_a", "label_b"]


def find_overlap(
    a: pd.DataFrame,
    b: pd.DataFrame,
    detector: NearDuplicateDetector | None = None,
    workers: int = 2,
) -> pd.DataFrame:
    """Pairs (image of ``a``, image of ``b``): ``match`` is ``exact`` (same bytes) or ``near``
    (the detector's verified near-duplicates; ``None``: exact only). Columns :data:`COLUMNS`."""
    paths = pd.concat([a["path"], b["path"]], ignore_index=True).astype(str).tolist()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = np.array(list(pool.map(file_digest, paths)))
    side = np.r_[np.zeros(len(a), bool), np.ones(len(b), bool)]
    by_digest = pd.DataFrame({"row": np.arange(len(paths)), "digest": digests, "side": side})
    by_digest = by_digest[by_digest["digest"] != ""]
    exact = by_digest[~by_digest["side"]].merge(
        by_digest[by_digest["side"]], on="digest", suffixes=("_a", "_b")
    )
    rows = [
        (ra, rb - len(a), "exact", 1.0) for ra, rb in zip(exact.row_a, exact.row_b, strict=True)
    ]
    if detector is not None:
        feats = extract_features(paths, workers)
        scored = detector.select(detector.score(feats, side=side))
        done = {(ra, rb) for ra, rb, _, _ in rows}
        for ra, rb, sim in zip(scored.a, scored.b, scored.similarity, strict=True):
            if (ra, rb - len(a)) not in done:
                rows.append((int(ra), int(rb) - len(a), "near", float(sim)))
    out = pd.DataFrame(rows, columns=["ra", "rb", "match", "similarity"])
    out["image_a"] = a["image_id"].astype(str).to_numpy()[out["ra"].to_numpy(dtype=int)]
    out["image_b"] = b["image_id"].astype(str).to_numpy()[out["rb"].to_numpy(dtype=int)]
    out["label_a"] = a["label"].astype(str).to_numpy()[out["ra"].to_numpy(dtype=int)]
    out["label_b"] = b["label"].astype(str).to_numpy()[out["rb"].to_numpy(dtype=int)]
    out["similarity"] = out["similarity"].round(4)
    return out[COLUMNS].sort_values(
        ["match", "similarity"], ascending=[True, False], ignore_index=True
    )


def cached_overlap(
    a: pd.DataFrame,
    b: pd.DataFrame,
    detector: NearDuplicateDetector | None,
    cache_dir: str | os.PathLike | None,
) -> pd.DataFrame:
    """:func:`find_overlap`, cached per (both image sets, detector) in ``cache_dir``."""
    if cache_dir is None:
        return find_overlap(a, b, detector)
    key = f"{content_fingerprint(a, cache_dir)}-{content_fingerprint(b, cache_dir)}-{f'{detector.key}-{detector.threshold}' if detector else 'exact'}"
    path = Path(cache_dir) / f"{key}.csv"
    if path.is_file():
        found = pd.read_csv(path, dtype={"image_a": str, "image_b": str})
    else:
        found = find_overlap(a, b, detector)
        path.parent.mkdir(parents=True, exist_ok=True)
        found.to_csv(path, index=False)
    return found


def warn_training_overlap(run_data, data, split: str) -> pd.DataFrame:
    """``dermlit-eval`` on other data: log a warning with the count and the first ids when the
    evaluated images overlap the run's TRAINING images (exact copies, and near-duplicates when
    the run's data config has a detector); returns the pairs."""
    train, evaluated = run_data.frame("train"), data.frame(split)
    detector = getattr(run_data, "near_duplicates", None)
    found = cached_overlap(train, evaluated, detector, Path(run_data.cache_dir) / "overlap")
    if len(found):
        log.warning(
            "%d evaluated image(s) overlap the run's training images (%d exact, %d near "
            "duplicate pair(s)): their metrics are not held-out. First: %s",
            found["image_b"].nunique(),
            int((found["match"] == "exact").sum()),
            int((found["match"] == "near").sum()),
            describe_ids(f"{r.image_b}~{r.image_a}" for r in found.itertuples()),
        )
    return found
