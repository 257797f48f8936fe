"""Speed and memory of ``dermlit data check`` (near-duplicates + image faults), side by side with
plain decoding of the same images, in one process (timings on a shared machine are noisy; the
ratio is what carries over).

    python benchmarks/check_speed.py ../shared/data/ham10000-200x150 --workers 2

Prints: plain decoding time, the whole check's time (no cache), each stage, the ratio, and the
peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from dermlit.data.check import check_source
from dermlit.data.image_faults import FaultThresholds
from dermlit.data.image_features import extract_features
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.sources import HAM10000Source


def decode(path: str) -> None:
    with Image.open(path) as img:
        img.convert("RGB")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--stages", action="store_true", help="also time the stages apart")
    args = parser.parse_args()
    source = HAM10000Source(args.root)
    df = source.load()[0]
    if args.limit:
        df = df.head(args.limit)
    paths = df["path"].tolist()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(decode, paths))
    t_decode = time.perf_counter() - t0
    print(f"{len(paths)} images, {args.workers} worker threads")
    print(f"plain decoding (PIL, threads):      {t_decode:7.1f} s   peak RSS {peak_mib():6.0f} MiB")

    detector = NearDuplicateDetector(workers=args.workers)
    if args.stages:
        t0 = time.perf_counter()
        feats = extract_features(paths, args.workers)
        t_feat = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = detector.score(feats)
        t_verify = time.perf_counter() - t0
        print(f"  features (one decode each):       {t_feat:7.1f} s")
        print(f"  candidates + verification:        {t_verify:7.1f} s   ({len(scored)} pairs)")
        del feats

    class Subset:  # the check of exactly these rows, no cache
        def load(self):
            frame, report = source.load()
            return frame[frame["image_id"].isin(df["image_id"])], report

    t0, c0 = time.perf_counter(), time.process_time()
    result = check_source(
        Subset(), args.workers, detector=detector, cache_dir=None, thresholds=FaultThresholds()
    )
    t_check, c_check = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"whole check (hashing, metadata, pixels): {t_check:7.1f} s   peak RSS {peak_mib():6.0f} MiB"
    )
    # wall time depends on what else the shared machine runs; CPU time much less so
    print(f"  its CPU time (all threads): {c_check:7.1f} s = {c_check / t_check:.2f} cores busy")
    print(f"ratio whole check / plain decoding: {t_check / t_decode:.1f}x")
    print(f"near-duplicate pairs: {len(result.near_duplicates)}")


if __name__ == "__main__":
    main()
