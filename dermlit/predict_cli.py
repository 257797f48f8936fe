"""``dermlit predict RUN_DIR INPUT --out OUT.csv``: a trained run on new images, case by case.

    dermlit predict RUN_DIR images/ --out out.csv [--html gallery.html]
    dermlit predict RUN_DIR cases.csv --images DIR --out out.csv      # CSV with an `image` column
    dermlit predict RUN_DIR images/ --out out.csv --onnx RUN_DIR/export/model.onnx

The run's tested weights, its preprocessing (resize + centre crop), TTA, post-hoc rule and
temperature (dermlit/inference/run.py); columns: dermlit/inference/table.py.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from dermlit.data.sources.folder import skipped_message
from dermlit.errors import InputError, exit_with
from dermlit.inference.inputs import list_inputs
from dermlit.inference.predictor import EagerRunner, OnnxRunner, Predictions, predict_images
from dermlit.inference.run import RunDecisions, load_decisions
from dermlit.inference.table import prediction_table, write_table

log = logging.getLogger(__name__)
#: decode threads: on 2 cores a second thread only competes with the model's (measured by
#: benchmarks/predict_throughput.py: 200x150 JPEGs decode at ~5000/s on one thread, 3600/s on two)
DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 1) // 2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a dermlit-train run directory")
    parser.add_argument("input", type=Path, help="a folder of images, or a CSV (image column)")
    parser.add_argument("--out", type=Path, required=True, help="the output CSV")
    parser.add_argument("--images", type=Path, help="folder of the CSV's images")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (eager PyTorch only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"decoding threads (default {DEFAULT_WORKERS}: half the cores, at most 4)",
    )
    parser.add_argument("--html", type=Path, help="also write a gallery (thumbnail, top-3, ...)")
    parser.add_argument("--onnx", type=Path, help="run this `dermlit export` file instead")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def onnx_runner(path: Path, decisions: RunDecisions) -> OnnxRunner:
    """The exported file, refused when it comes from another run (config hash)."""
    from dermlit.export.onnx import OnnxClassifier

    try:
        classifier = OnnxClassifier(path)
        classifier.metadata.require_run(decisions.config_hash, str(path))
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None
    if classifier.metadata.image_size != decisions.image_size:
        raise InputError(
            f"{path}: image size {classifier.metadata.image_size}, the run's is "
            f"{decisions.image_size}: export the run again"
        )
    return OnnxRunner(classifier)


def predict(args: argparse.Namespace) -> tuple[Path, Predictions]:
    if args.batch_size < 1 or args.workers < 1:
        raise InputError(
            f"--batch-size and --workers must be >= 1: {args.batch_size}, {args.workers}"
        )
    decisions = load_decisions(args.run_dir)
    items, skipped = list_inputs(args.input, args.images)
    if args.onnx is not None:
        runner = onnx_runner(args.onnx, decisions)
    else:
        if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
            raise InputError(f"--device must be cpu or cuda, got {args.device!r}")
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise InputError("--device cuda: no CUDA device is available; use --device cpu")
        from dermlit.inference.weights import deployable_model

        runner = EagerRunner(deployable_model(decisions, args.device), args.device)
    result = predict_images(
        items,
        runner,
        decisions.image_size,
        args.batch_size,
        args.workers,
        thumbnails=args.html is not None,
        progress=not args.no_progress,
    )
    table = prediction_table(
        [i.name for i in items], result.probs, result.errors, result.notes, decisions
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_table(table, args.out)
    if args.html is not None:
        from dermlit.inference.gallery import write_gallery

        title = f"dermlit predict: {Path(args.run_dir).name} on {Path(args.input).name}"
        write_gallery(args.html, table, result.thumbnails, title)
    failed = [i.name for i, e in zip(items, result.errors, strict=True) if e]
    if failed:
        shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        print(
            f"dermlit predict: {len(failed)} image(s) could not be read ({shown}): listed "
            f"in {args.out} with the reason in the 'error' column"
        )
    converted = int(sum(bool(n) for n in result.notes))
    if converted:
        print(
            f"dermlit predict: {converted} image(s) converted, turned upright or upscaled (see "
            "the 'note' column)"
        )
    if skipped:
        print(f"dermlit predict: {skipped_message(args.input, skipped)}; not in {args.out}")
    n_ok = int(np.isfinite(result.probs[:, 0]).sum())
    print(f"dermlit predict: {n_ok} of {len(items)} image(s) predicted -> {args.out}")
    return args.out, result


def run(args: argparse.Namespace) -> int:
    try:
        predict(args)
    except InputError as err:
        exit_with("dermlit predict", str(err))
    return 0
