"""Precision and recall of near-duplicate detection on constructed re-acquisitions.

A random subset of real images plus re-acquisition-like copies of some of them
(:func:`dermlit.data.reacquire.reacquire`: shift >= 10 %, any angle, mirror, zoom +-15 %,
exposure, white balance, JPEG 50-90). A copy and its original are the positives; a detected
pair of two real images of one lesion is counted apart (a true re-acquisition, not a false
alarm); any other detected pair is a false positive (conservative: some may be real missing
lesion links). Reports, as markdown:

- stage 1 (candidates): recall@k of the global descriptor, and of a plain pHash for comparison;
- stage 2 (verification): precision and recall per NCC threshold;
- the plain pHash baseline (imagehash, Hamming distance threshold) as a whole detector.

    python benchmarks/near_duplicates_eval.py ../shared/data/ham10000-200x150 --real 2000 --copies 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from dermlit.data.image_features import extract_features, read_working_image
from dermlit.data.near_duplicates import NearDuplicateDetector, nearest_neighbours
from dermlit.data.reacquire import reacquire
from dermlit.data.sources import HAM10000Source


def constructed_set(root: Path, n_real: int, n_copies: int, seed: int, out: Path) -> pd.DataFrame:
    """The real subset plus copies (PNG: lossless after the copy's own JPEG round trip)."""
    df, _ = HAM10000Source(root).load()
    rng = np.random.default_rng(seed)
    real = df.iloc[rng.permutation(len(df))[:n_real]].reset_index(drop=True)
    real["copy_of"] = ""
    rows = []
    for i in rng.permutation(n_real)[:n_copies]:
        src = real.iloc[i]
        rgb, _ = read_working_image(src["path"])
        copy, _ = reacquire(rgb, rng)
        path = out / f"{src['image_id']}_copy.png"
        Image.fromarray(copy).save(path)
        rows.append({**src.to_dict(), "image_id": path.stem, "path": str(path)})
        rows[-1]["copy_of"] = src["image_id"]
    return pd.concat([real, pd.DataFrame(rows)], ignore_index=True)


def phash_bits(paths: list[str]) -> np.ndarray:
    import imagehash  # the baseline only (dev extra)

    hashes = []
    for p in paths:
        with Image.open(p) as img:
            hashes.append(imagehash.phash(img).hash.ravel())
    return np.packbits(np.array(hashes), axis=1).view(np.uint64).ravel()


def phash_distances(bits: np.ndarray) -> np.ndarray:
    d = np.bitwise_count(bits[:, None] ^ bits[None, :]).astype(np.int16)
    np.fill_diagonal(d, 999)
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--real", type=int, default=2000)
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--neighbours", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        df = constructed_set(args.root, args.real, args.copies, args.seed, Path(tmp))
        t0 = time.perf_counter()
        feats = extract_features(df["path"].tolist(), args.workers)
        t_feat = time.perf_counter() - t0
        bits = phash_bits(df["path"].tolist())
    ids = df["image_id"].to_numpy()
    row = {i: k for k, i in enumerate(ids)}
    copies = df[df["copy_of"] != ""]
    truth = {
        tuple(sorted((row[c], row[o])))
        for c, o in zip(copies.image_id, copies.copy_of, strict=False)
    }
    lesion = df["lesion_id"].to_numpy()
    is_copy = (df["copy_of"] != "").to_numpy()
    print(f"{args.real} real images + {len(truth)} constructed copies (seed {args.seed})")
    print(f"features: {t_feat:.1f} s ({1e3 * t_feat / len(df):.1f} ms/image)\n")

    print("## Stage 1: candidates, recall of the constructed pairs at k neighbours\n")
    print("| k | global descriptor | pHash |\n|---:|---:|---:|")
    dist = phash_distances(bits)
    order = np.argsort(dist, axis=1, kind="stable")
    for k in (1, 5, 10, 20, 50):
        nn = nearest_neighbours(feats.descriptor, k, feats.ok)
        found = set(zip(nn.a, nn.b, strict=False))
        ph = {tuple(sorted((i, j))) for i in range(len(df)) for j in order[i, :k]}
        r_desc = np.mean([p in found for p in truth])
        r_ph = np.mean([p in ph for p in truth])
        print(f"| {k} | {r_desc:.3f} | {r_ph:.3f} |")

    detector = NearDuplicateDetector(neighbours=args.neighbours, workers=args.workers)
    t0 = time.perf_counter()
    scored = detector.score(feats)
    t_ver = time.perf_counter() - t0
    print(f"\n{len(scored)} candidate pairs verified in {t_ver:.1f} s")
    reach = np.mean([p in set(zip(scored.a, scored.b, strict=False)) for p in truth])
    print(f"stage-1 recall at neighbours={args.neighbours}: {reach:.3f}\n")
    print(f"## Stage 2: verified pairs (inliers >= {detector.min_inliers}), by NCC threshold\n")
    print(
        "| threshold | detected | constructed found | recall | same-lesion real pairs | "
        "other pairs (false +) | precision |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    same_total = int(
        (df[~is_copy].groupby("lesion_id").size().pipe(lambda s: s * (s - 1) / 2)).sum()
    )
    for threshold in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        detector.threshold = threshold
        hit = detector.select(scored)
        pairs = list(zip(hit.a, hit.b, strict=False))
        tp = sum(p in truth for p in pairs)
        same = sum((p not in truth) and lesion[p[0]] == lesion[p[1]] for p in pairs)
        other = len(pairs) - tp - same
        precision = (tp + same) / max(len(pairs), 1)
        print(
            f"| {threshold} | {len(pairs)} | {tp} | {tp / len(truth):.3f} | "
            f"{same} of {same_total} | {other} | {precision:.3f} |"
        )
        if threshold == 0.6 and other:
            shown = [
                f"{ids[a]}~{ids[b]} ({s:.2f})"
                for a, b, s in zip(hit.a, hit.b, hit.similarity, strict=False)
                if (a, b) not in truth and lesion[a] != lesion[b]
            ]
            print(f"|  | cross-lesion at 0.6: {', '.join(shown[:10])} | | | | | |")

    print("\n## Baseline: plain pHash (imagehash, 64 bits) as the whole detector\n")
    print("| Hamming <= | detected | constructed found | recall | other pairs | precision |")
    print("|---:|---:|---:|---:|---:|---:|")
    iu = np.triu_indices(len(df), 1)
    flat = dist[iu]
    for t in (4, 8, 12, 16, 20):
        sel = flat <= t
        pairs = list(zip(iu[0][sel], iu[1][sel], strict=False))
        tp = sum(p in truth for p in pairs)
        same = sum((p not in truth) and lesion[p[0]] == lesion[p[1]] for p in pairs)
        other = len(pairs) - tp - same
        print(
            f"| {t} | {len(pairs)} | {tp} | {tp / len(truth):.3f} | {other} | "
            f"{(tp + same) / max(len(pairs), 1):.3f} |"
        )


if __name__ == "__main__":
    main()
