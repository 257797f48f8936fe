"""Images/s of ``dermlit predict`` from JPEG files: PyTorch eager vs onnxruntime, side by side.

    python benchmarks/predict_throughput.py RUN_DIR [--images DIR] [--n 512] [--threads 2]

Rounds are interleaved (eager, onnx, eager, onnx, ...) so that load on the shared machine hits
both alike; the median round is printed. Per backend: the model alone on decoded uint8 batches
("no decode"), and the whole path from the files ("with decode": predict_images, i.e. the
decode thread pool with the next batch decoded while the model runs the current one). Decoding
alone is timed serially (1 thread) and with ``--workers`` threads; "decode share" is serial
decode time / (serial decode + model) time, the share decoding would take without overlap.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from dermlit.export.onnx import OnnxClassifier, build_metadata, export_onnx
from dermlit.inference.inputs import InputImage, decode_batch, folder_images
from dermlit.inference.predictor import EagerRunner, OnnxRunner, batches, predict_images
from dermlit.inference.run import load_decisions
from dermlit.inference.weights import deployable_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared/data/ham10000-200x150/images"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def decode_all(items: list[InputImage], size: int, batch: int, workers: int) -> np.ndarray:
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        return np.concatenate(
            [decode_batch(list(c), size, pool).pixels for c in batches(items, batch)]
        )
    finally:
        if pool is not None:
            pool.shutdown()


def model_only(runner, pixels: np.ndarray, batch: int) -> None:
    for start in range(0, len(pixels), batch):
        runner(pixels[start : start + batch])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--n", type=int, default=512, help="images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    parser.add_argument("--workers", type=int, default=2, help="decode threads")
    parser.add_argument("--onnx", type=Path, help="an existing export (default: export now)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    decisions = load_decisions(args.run_dir)
    size, bs = decisions.image_size, args.batch_size
    model = deployable_model(decisions)
    onnx_path = args.onnx
    if onnx_path is None:
        onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
        meta = build_metadata(
            model, decisions.settings.cost.matrix, decisions.config_hash, decisions.conformal
        )
        export_onnx(model, onnx_path, meta)
    runners = {
        "eager": EagerRunner(model),
        "onnx": OnnxRunner(OnnxClassifier(onnx_path, threads=args.threads)),
    }
    items = folder_images(args.images)[0][: args.n]
    n = len(items)
    pixels = decode_all(items, size, bs, 1)
    for runner in runners.values():  # warm-up (allocations, onnxruntime's first run)
        model_only(runner, pixels[: 2 * bs], bs)

    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        times.setdefault("decode serial", []).append(timed(lambda: decode_all(items, size, bs, 1)))
        times.setdefault(f"decode {args.workers} threads", []).append(
            timed(lambda: decode_all(items, size, bs, args.workers))
        )
        for name, runner in runners.items():
            times.setdefault(f"{name} no decode", []).append(
                timed(lambda r=runner: model_only(r, pixels, bs))
            )
            times.setdefault(f"{name} with decode", []).append(
                timed(
                    lambda r=runner: predict_images(
                        items, r, size, bs, args.workers, progress=False
                    )
                )
            )
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{n} JPEGs from {args.images} at {size} px, batch {bs}, {args.threads} threads, "
        f"{args.workers} decode threads, median of {args.rounds} interleaved rounds "
        f"(TTA views: {len(decisions.config.model.tta.views)})"
    )
    print(f"{'':28s}{'images/s':>10s}{'s/round':>10s}")
    for key, seconds in median.items():
        print(f"{key:28s}{n / seconds:10.1f}{seconds:10.3f}")
    for name in runners:
        serial = median["decode serial"] / (median["decode serial"] + median[f"{name} no decode"])
        print(f"{name}: decode share (serial decode, no overlap) {serial:.0%}")
    shares = [
        median["decode serial"] / (median["decode serial"] + median[f"{k} no decode"])
        for k in runners
    ]
    ratio = median["eager with decode"] / median["onnx with decode"]
    print(
        f"targets: onnx at least as fast as eager: {'yes' if ratio >= 1 else 'NO'}; decoding at "
        f"most half the time: {'yes' if max(shares) <= 0.5 else 'NO (use --workers > 1)'}"
    )
    print(
        f"onnx / eager speed, with decode: {ratio:.2f}x; no decode: "
        f"{median['eager no decode'] / median['onnx no decode']:.2f}x"
    )


if __name__ == "__main__":
    main()
