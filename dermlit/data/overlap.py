"""Images shared by two datasets: ISIC 2019's training set contains HAM10000, so training on
one and testing on the other leaks unless the shared images are found (from the bytes and the
pixels; image ids need not agree across releases).

:func:`find_overlap` lists exact (byte-identical) and near-duplicate pairs between two index
tables; :func:`warn_training_overlap` is what ``dermlit-eval`` calls on external data.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from dermlit.data.image_features import extract_features
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.validation import describe_ids

log = logging.getLogger(__name__)
COLUMNS = ["image_a", "image_b", "match", "similarity", "label_a", "label_b"]


def file_digest(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    except OSError:
        return ""


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


def warn_training_overlap(
    train: pd.DataFrame, evaluated: pd.DataFrame, detector: NearDuplicateDetector | None
) -> pd.DataFrame:
    """Log a warning with the count and the first ids when images being evaluated overlap the
    run's training images; returns the overlapping pairs."""
    found = find_overlap(train, evaluated, detector)
    if len(found):
        log.warning(
            "%s evaluated image(s) overlap the run's training images (%d exact, %d near "
            "duplicates): the metrics on them are not held-out. First: %s",
            found["image_b"].nunique(),
            int((found["match"] == "exact").sum()),
            int((found["match"] == "near").sum()),
            describe_ids(f"{r.image_b}~{r.image_a}" for r in found.itertuples()),
        )
    return found
