"""Writes the run-directory contract of DESIGN.md: splits.csv, metrics.json, predictions.csv,
report/; Hydra writes .hydra/ and the checkpoint callback writes checkpoints/."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from dermlit.constants import CLASSES
from dermlit.evaluation.bootstrap import metrics_with_ci
from dermlit.evaluation.predictions import predictions_frame, write_predictions

HEADLINE = ("macro_f1", "balanced_accuracy", "accuracy", "ece", "recall_mel", "auroc_macro")


def _jsonable(value):
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_metrics(path: str | Path, metrics: Mapping[str, float]) -> None:
    """Flat keys; NaN (undefined, e.g. AUROC of an absent class) is written as null."""
    data = {k: _jsonable(v) for k, v in metrics.items()}
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_evaluation(
    out_dir: str | Path,
    image_ids: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    split: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """predictions.csv, metrics.json (with bootstrap CIs) and report/report.md for one split."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.csv", predictions_frame(image_ids, probs, targets))
    labelled = targets >= 0
    metrics: dict[str, float] = {}
    if labelled.any():
        metrics = metrics_with_ci(
            probs[labelled],
            targets[labelled],
            prefix=f"{split}/",
            n_resamples=n_resamples,
            seed=seed,
        )
    metrics[f"{split}/n_images"] = int(len(image_ids))
    write_metrics(out_dir / "metrics.json", metrics)
    report_dir = out_dir / "report"
    report_dir.mkdir(exist_ok=True)
    (report_dir / "report.md").write_text(markdown_summary(metrics, split))
    return metrics


def headline_rows(metrics: Mapping[str, float], split: str) -> list[tuple[str, str, str]]:
    rows = []
    for name in HEADLINE:
        key = f"{split}/{name}"
        if key not in metrics:
            continue
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        ci = f"[{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        rows.append((key, f"{metrics[key]:.3f}", ci))
    for cls in CLASSES:
        key = f"{split}/recall_{cls}"
        if key in metrics and cls != "mel":
            low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
            ci = f"[{low:.3f}, {high:.3f}]" if low is not None else ""
            rows.append((key, f"{metrics[key]:.3f}", ci))
    return rows


def markdown_summary(metrics: Mapping[str, float], split: str) -> str:
    lines = [f"# {split} metrics\n", "| metric | value | 95% CI |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v} | {ci} |" for k, v, ci in headline_rows(metrics, split)]
    return "\n".join(lines) + "\n"


def print_summary(metrics: Mapping[str, float], split: str, run_dir: str | Path) -> None:
    table = Table(title=f"{split} metrics (95% bootstrap CI)")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for row in headline_rows(metrics, split):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"Run directory: {Path(run_dir).resolve()}")
