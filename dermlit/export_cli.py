"""``dermlit export RUN_DIR --format onnx [--out FILE]``: one file a deployment team can run.

The graph takes uint8 RGB (N, S, S, 3) (resized + centre-cropped as the run's cache did) and
holds the tested weights, the TTA views, the post-hoc bias and the temperature; its metadata
holds the class order, image size, normalisation, cost matrix, conformal thresholds, referral
rule and the run's config hash (dermlit/export/onnx.py). ``dermlit predict --onnx FILE`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dermlit.errors import InputError, exit_with

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a dermlit-train run directory")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--out", type=Path, help="default: RUN_DIR/export/model.onnx")


def export_run(run_dir: Path, out: Path | None = None) -> Path:
    from dermlit.export.onnx import build_metadata, export_onnx
    from dermlit.inference.run import load_decisions
    from dermlit.inference.weights import deployable_model

    if out is not None and Path(out).is_dir():  # refused before the export, not at its end
        example = Path(out) / "model.onnx"
        raise InputError(
            f"--out {out} is a directory: give the file to write, e.g. --out {example}"
        )
    decisions = load_decisions(run_dir)
    model = deployable_model(decisions, "cpu")
    metadata = build_metadata(
        model,
        decisions.settings.cost.matrix,
        decisions.config_hash,
        decisions.conformal,
        decisions.settings.cost.name,
        referral=decisions.referral.to_dict(),
    )
    out = out or Path(run_dir) / "export" / "model.onnx"
    try:
        return export_onnx(model, out, metadata)
    except ImportError as err:
        raise InputError(
            f"ONNX export needs the `export` extra (pip install 'dermlit[export]'): {err}"
        ) from None


def run(args: argparse.Namespace) -> int:
    try:
        path = export_run(args.run_dir, args.out)
    except InputError as err:
        exit_with("dermlit export", str(err))
    print(f"dermlit export: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
