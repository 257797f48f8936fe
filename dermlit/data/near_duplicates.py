"""Near-duplicate images from the pixels: re-acquisitions of one lesion (shifted, rotated by any
angle, zoomed, lit and compressed differently), which byte hashes and perceptual hashes miss.

Two stages (the classical retrieval answer; numbers in the README's "Data hygiene"):

1. **Candidates**: the ``neighbours`` nearest images of each image by the invariant global
   descriptor of :mod:`dermlit.data.image_features` (cosine similarity, a blocked matrix product:
   ``O(N^2 d)`` flops but ``O(block N)`` memory and no Python loop over pairs; 25k images is
   ~1 s of BLAS).
2. **Verification** of each candidate pair: ORB descriptors matched (Hamming distances as one
   matrix product of +-1 vectors, Lowe's ratio test), a similarity transform (rotation, scale,
   shift; the mirror image is tried too) fitted by RANSAC, and then the pixels: the normalised
   cross-correlation (NCC) of the log grey images aligned by that transform over their overlap.
   Unrelated smooth images sometimes get a handful of consistent matches; they do not also
   correlate once aligned, so the NCC is the pair's ``similarity`` and the decision is
   ``inliers >= min_inliers and similarity >= threshold``.

No list of known duplicates is used anywhere: tests and the README's numbers use copies made
by :func:`dermlit.data.reacquire.reacquire`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from dermlit.data.fingerprint import content_fingerprint
from dermlit.data.image_features import ImageFeatures, extract_features

log = logging.getLogger(__name__)

#: bump when the features or the verification change: invalidates cached detections
#: (3: the NCC ignores the warp's border pixels; ORB features without a shared CLAHE)
DETECTOR_VERSION = 3
PAIR_COLUMNS = ["a", "b", "similarity", "inliers", "overlap", "mirrored", "global_similarity"]
SAME_LESION = "same lesion (expected)"
CROSS_LESION = "different lesions, same label (missing lesion link: leakage risk)"
LABELS_DIFFER = "different labels (contradiction: error)"
KINDS = (SAME_LESION, CROSS_LESION, LABELS_DIFFER)


def nearest_neighbours(
    descriptor: np.ndarray,
    k: int,
    valid: np.ndarray | None = None,
    block: int = 2048,
    side: np.ndarray | None = None,
) -> pd.DataFrame:
    """Unique unordered pairs ``(a < b, global_similarity)`` where b is among a's ``k`` most
    cosine-similar rows or a among b's. Descriptor dimensions are standardised first (over the
    valid rows) so that no histogram dominates the cosine. With ``side`` (a bool per row), only
    pairs across the two sides are candidates (two datasets' overlap)."""
    valid = np.ones(len(descriptor), bool) if valid is None else valid
    rows = np.flatnonzero(valid)
    if len(rows) < 2 or k < 1:
        return pd.DataFrame({"a": [], "b": [], "global_similarity": []})
    x = descriptor[rows].astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
    sides = None if side is None else np.asarray(side, bool)[rows]
    k = min(k, len(rows) - 1 if sides is None else int(min(sides.sum(), (~sides).sum())))
    if k < 1:
        return pd.DataFrame({"a": [], "b": [], "global_similarity": []})
    a_parts, b_parts, s_parts = [], [], []
    for start in range(0, len(rows), block):
        sims = x[start : start + block] @ x.T
        own = np.arange(start, start + len(sims))
        sims[np.arange(len(sims)), own] = -np.inf
        if sides is not None:
            sims[sides[own][:, None] == sides[None, :]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        a_parts.append(np.repeat(own, k))
        b_parts.append(top.ravel())
        s_parts.append(np.take_along_axis(sims, top, 1).ravel())
    a, b, s = map(np.concatenate, (a_parts, b_parts, s_parts))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = pd.DataFrame({"a": rows[lo], "b": rows[hi], "global_similarity": s})
    return pairs.drop_duplicates(["a", "b"]).sort_values(["a", "b"], ignore_index=True)


def _signs(packed: np.ndarray) -> np.ndarray:
    """Packed 256-bit descriptors as +-1 floats: Hamming = (256 - a . b) / 2."""
    return np.unpackbits(packed, axis=1).astype(np.float32) * 2 - 1


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


class NearDuplicateDetector:
    """Finds near-duplicate pairs; ``threshold`` on the aligned NCC (module docstring).

    ``neighbours``: candidates per image; ``min_inliers``: RANSAC inliers for a transform;
    ``ratio``: Lowe's ratio test; ``min_overlap``: the aligned images' overlap (fraction of the
    first image) below which the pixels are not trusted to decide.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        min_inliers: int = 12,
        neighbours: int = 10,
        ratio: float = 0.8,
        min_overlap: float = 0.3,
        workers: int = 2,
    ) -> None:
        if not -1 <= threshold <= 1:
            raise ValueError(
                f"near_duplicates.threshold must be an NCC in [-1, 1], got {threshold}"
            )
        self.threshold, self.min_inliers, self.neighbours = threshold, min_inliers, neighbours
        self.ratio, self.min_overlap, self.workers = ratio, min_overlap, workers

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(threshold={self.threshold}, min_inliers={self.min_inliers}, "
            f"neighbours={self.neighbours})"
        )

    @property
    def key(self) -> str:
        """What the cached candidate scores depend on (the threshold is applied afterwards)."""
        params = (DETECTOR_VERSION, self.min_inliers, self.neighbours, self.ratio, self.min_overlap)
        return hashlib.sha256(repr(params).encode()).hexdigest()[:10]

    # ------------------------------------------------------------------ verification
    def verify(self, feats: ImageFeatures, a: int, b: int) -> tuple[float, int, float, bool]:
        """``(similarity, inliers, overlap, mirrored)`` of images a and b; similarity 0 when no
        transform with ``min_inliers`` and ``min_overlap`` is found."""
        return self.verify_many(feats, a, [b])[0]

    def verify_many(
        self, feats: ImageFeatures, a: int, others: list[int]
    ) -> list[tuple[float, int, float, bool]]:
        """:meth:`verify` of a against each of ``others``: one matrix product for all of their
        descriptors (both orientations), then a RANSAC fit per pair and orientation."""
        results = [(0.0, 0, 0.0, False)] * len(others)
        na = int(feats.n_points[a, 0])
        if na < self.min_inliers:
            return results
        query = _signs(feats.binary[a, 0, :na])
        segments = [
            (k, b, o, int(feats.n_points[b, o]))
            for k, b in enumerate(others)
            for o in (0, 1)
            if feats.n_points[b, o] >= max(2, self.min_inliers)
        ]
        if not segments:
            return results
        stacked = np.concatenate([feats.binary[b, o, :n] for _, b, o, n in segments])
        hamming_all = (256 - query @ _signs(stacked).T) / 2
        start = 0
        for k, b, o, n in segments:
            hamming = hamming_all[:, start : start + n]
            start += n
            found = self._fit(feats, a, b, o, hamming)
            if found is not None and found[0] > results[k][0]:
                results[k] = found
        return results

    def _fit(self, feats, a, b, orientation, hamming) -> tuple[float, int, float, bool] | None:
        """Ratio test, RANSAC similarity transform, aligned NCC; ``None`` when any fails."""
        rows = np.arange(len(hamming))
        nearest = hamming.argmin(1)
        first = hamming[rows, nearest]
        masked = hamming.copy()
        masked[rows, nearest] = np.inf
        good = np.flatnonzero(first < self.ratio * masked.min(1))
        if len(good) < self.min_inliers:
            return None
        p = feats.points[a, 0, good]
        q = feats.points[b, orientation, nearest[good]]
        transform, inliers = cv2.estimateAffinePartial2D(
            q, p, method=cv2.RANSAC, ransacReprojThreshold=3.0
        )
        if transform is None or int(inliers.sum()) < self.min_inliers:
            return None
        scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
        if not 0.5 <= scale <= 2.0:
            return None
        similarity, overlap = self._aligned_ncc(feats, a, b, orientation, transform)
        if overlap < self.min_overlap:
            return None
        return similarity, int(inliers.sum()), overlap, bool(orientation)

    @staticmethod
    def _aligned_ncc(feats, a, b, orientation, transform) -> tuple[float, float]:
        """NCC of the half-size log grey images, b warped onto a; and the overlap fraction."""
        grey_a, grey_b = feats.grey[a], feats.grey[b]
        if orientation:
            grey_b = grey_b[:, ::-1]
        half = transform.copy()
        half[:, 2] /= 2  # the same transform between the half-size images
        h, w = grey_a.shape
        log_b = np.log(np.ascontiguousarray(grey_b, dtype=np.float32) + 8.0)
        warped = cv2.warpAffine(log_b, half, (w, h), flags=cv2.INTER_LINEAR)
        # a pixel is valid only where its whole bilinear footprint lies inside b (warped alike):
        # nearest-neighbour warping of the mask, and erosion with OpenCV's default border, kept
        # edge pixels blended with the zero border, and exact copies under a near-identity
        # transform scored 0.66-0.79 against 0.99 without them (a measured miss)
        ones = np.ones(grey_b.shape, np.float32)
        inside = cv2.warpAffine(ones, half, (w, h), flags=cv2.INTER_LINEAR) > 1 - 1e-4
        kernel = np.ones((3, 3), np.uint8)
        eroded = cv2.erode(inside.astype(np.uint8), kernel, borderValue=0)
        valid = eroded > 0
        overlap = float(valid.mean())
        log_a = np.log(grey_a.astype(np.float32) + 8.0)
        # the dermoscope's dark circular vignette is not the lesion: two vignetted images
        # correlate on it under the identity transform (a measured false positive), so the
        # NCC ignores pixels darker than 40 % of either image's median
        valid &= log_a > np.log(0.4 * np.median(grey_a) + 8.0)
        valid &= warped > np.log(0.4 * np.median(grey_b) + 8.0)
        if valid.sum() < 100:
            return 0.0, overlap
        return _ncc(log_a[valid], warped[valid]), overlap

    # ------------------------------------------------------------------ the two stages
    def score(self, feats: ImageFeatures, side: np.ndarray | None = None) -> pd.DataFrame:
        """Every candidate pair with its verification (``PAIR_COLUMNS``), threshold not applied;
        ``side``: only pairs across two sets (:func:`nearest_neighbours`)."""
        candidates = nearest_neighbours(feats.descriptor, self.neighbours, feats.ok, side=side)
        groups = list(candidates.groupby("a", sort=True)["b"])  # pairs are sorted by a
        chunks = np.array_split(np.arange(len(groups)), max(1, 8 * self.workers))

        def run(chunk: np.ndarray) -> list:
            with threadpool_limits(1):  # parallel over pairs; BLAS threads would oversubscribe
                return [
                    r
                    for g in chunk
                    for r in self.verify_many(feats, int(groups[g][0]), groups[g][1].tolist())
                ]

        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            results = [r for part in pool.map(run, chunks) for r in part]
        scored = pd.DataFrame(results, columns=["similarity", "inliers", "overlap", "mirrored"])
        scored = pd.concat([candidates[["a", "b"]], scored], axis=1)
        scored["global_similarity"] = candidates["global_similarity"].to_numpy()
        return scored[PAIR_COLUMNS]

    def select(self, scored: pd.DataFrame) -> pd.DataFrame:
        keep = (scored["inliers"] >= self.min_inliers) & (scored["similarity"] >= self.threshold)
        return scored[keep].sort_values("similarity", ascending=False, ignore_index=True)

    def find(self, feats: ImageFeatures) -> pd.DataFrame:
        """The near-duplicate pairs (row indices a < b), most similar first."""
        return self.select(self.score(feats))

    # ------------------------------------------------------------------ cached, by image id
    def scored_pairs(
        self, df: pd.DataFrame, cache_dir: str | os.PathLike | None, feats: ImageFeatures | None
    ) -> pd.DataFrame:
        """:meth:`score` with ``image_a, image_b`` ids, cached per (image ids and bytes, detector
        key): training runs on the same images, or on a copy of them elsewhere, read a CSV
        instead of recomputing (~2.5 min on HAM10000)."""
        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / f"{content_fingerprint(df, cache_dir)}-{self.key}.csv"
            if path.is_file():
                log.info("Near-duplicate cache hit: %s", path)
                return pd.read_csv(path, dtype={"image_a": str, "image_b": str})
        if feats is None:
            log.info("Near-duplicate detection over %d images (once per image set)", len(df))
            feats = extract_features(df["path"].astype(str).tolist(), self.workers)
        scored = self.score(feats)
        ids = df["image_id"].astype(str).to_numpy()
        scored.insert(0, "image_a", ids[scored.pop("a")])
        scored.insert(1, "image_b", ids[scored.pop("b")])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            scored.to_csv(tmp, index=False)
            os.replace(tmp, path)
            meta = {"detector": repr(self), "key": self.key, "images": len(df)}
            path.with_suffix(".json").write_text(json.dumps(meta))
        return scored

    def pairs(
        self,
        df: pd.DataFrame,
        cache_dir: str | os.PathLike | None = None,
        feats: ImageFeatures | None = None,
    ) -> pd.DataFrame:
        """The near-duplicate pairs of ``df`` by image id (:func:`describe_pairs` columns)."""
        return describe_pairs(self.select(self.scored_pairs(df, cache_dir, feats)), df)


def describe_pairs(pairs: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """``image_a,image_b,similarity,lesion_a,lesion_b,label_a,label_b,inliers,overlap,kind``."""
    by_id = df.set_index(df["image_id"].astype(str))
    out = pairs[["image_a", "image_b", "similarity"]].copy()
    for side in ("a", "b"):
        ids = out[f"image_{side}"]
        out[f"lesion_{side}"] = by_id.loc[ids, "lesion_id"].astype(str).to_numpy()
        out[f"label_{side}"] = by_id.loc[ids, "label"].astype(str).to_numpy()
    out["inliers"] = pairs["inliers"].to_numpy()
    out["overlap"] = pairs["overlap"].round(3).to_numpy()
    out["similarity"] = out["similarity"].round(4)
    kind = np.where(out["lesion_a"] == out["lesion_b"], SAME_LESION, CROSS_LESION)
    out["kind"] = np.where(out["label_a"] != out["label_b"], LABELS_DIFFER, kind)
    return out.reset_index(drop=True)


def clusters(image_ids: pd.Series, pairs: pd.DataFrame) -> list[list[str]]:
    """Connected components (two images or more) of the near-duplicate links, largest first."""
    ids = image_ids.astype(str).tolist()
    row = {image_id: i for i, image_id in enumerate(ids)}
    a = pairs["image_a"].map(row).to_numpy(dtype=np.int64)
    b = pairs["image_b"].map(row).to_numpy(dtype=np.int64)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, component = connected_components(graph, directed=False)
    groups = pd.Series(ids).groupby(component).agg(list)
    groups = [sorted(g) for g in groups if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))
