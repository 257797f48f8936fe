"""Writes the run-directory contract of docs/design.md ("Contract"): splits.csv, metrics.json,
predictions.csv, report/; Hydra writes .hydra/ and the checkpoint callback writes checkpoints/."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from scipy.special import softmax

from dermlit.atomic import write_text_atomic
from dermlit.constants import CLASSES
from dermlit.data.validation import describe_ids
from dermlit.distributed import gather_in_dataset_order
from dermlit.errors import InputError
from dermlit.evaluation.analysis import Analysis, analyse, log_probs
from dermlit.evaluation.formatting import ci_label, fmt
from dermlit.evaluation.metrics import point_metrics
from dermlit.evaluation.posthoc import DecisionAdjustment
from dermlit.evaluation.predictions import predictions_frame, read_scores, write_predictions
from dermlit.evaluation.report import Report, write_report
from dermlit.evaluation.settings import EvalSettings
from dermlit.evaluation.subgroups import DEFAULT_COLUMNS as METADATA_COLUMNS

if TYPE_CHECKING:
    from dermlit.data.datamodule import DermDataModule
    from dermlit.explain.review import ErrorExplanations

#: the metrics of the table printed at the end of a run or an evaluation (and the other recalls)
SUMMARY_METRICS = (
    "macro_f1",
    "balanced_accuracy",
    "accuracy",
    "auroc_macro",
    "recall_mel",
    "ece",
    "ece_ts",
    "bayes_mean_cost",
    "argmax_mean_cost",
)


def _jsonable(value):
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def write_metrics(path: str | Path, metrics: Mapping[str, float]) -> None:
    """Flat keys; NaN (undefined, e.g. AUROC of an absent class) is written as null.

    Atomic (:func:`~dermlit.atomic.write_text_atomic`): a job killed mid-write leaves the old
    metrics.json or none, never a truncated one."""
    data = {k: _jsonable(v) for k, v in metrics.items()}
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass
class SplitOutputs:
    """A model's outputs on one split: image ids, logits (N, 7) and targets (-1: unlabelled).

    From a predictions.csv only probabilities exist; ``log(p)`` stands in for the logits
    (softmax(log p) = p, so temperature scaling works on them unchanged).
    """

    image_ids: list[str]
    logits: np.ndarray
    targets: np.ndarray
    #: per-image metadata (age, sex, localization, ...) in row order, for subgroup metrics
    metadata: pd.DataFrame | None = None
    #: the column of ``metadata`` naming each image's source (the data source's source_column)
    source_column: str | None = None

    @property
    def probs(self) -> np.ndarray:
        return softmax(np.asarray(self.logits, dtype=np.float64), axis=1)

    @classmethod
    def from_predictions(
        cls, path: str | Path, predictions_are: str = "probabilities"
    ) -> SplitOutputs:
        """A validated predictions file (see :func:`read_scores`); logits are kept as logits."""
        ids, values, targets = read_scores(path, predictions_are)
        logits = values if predictions_are == "logits" else log_probs(values)
        return cls(ids, logits, targets)

    def with_metadata(
        self, table: pd.DataFrame, id_column: str, source_column: str | None = None
    ) -> SplitOutputs:
        """These outputs with per-image metadata joined from ``table`` on ``id_column``: the
        subgroup columns it has and ``source_column`` (per-source metrics). What a model run
        gets from its data source, for outputs read from a predictions file, whose format has
        no room for it. Every image must have exactly one row."""
        wanted = [id_column, *([source_column] if source_column else [])]
        absent = [c for c in wanted if c not in table.columns]
        if absent:
            raise InputError(
                f"metadata table lacks column(s) {absent}; it has {list(table.columns)}: "
                "set metadata.id_column / metadata.source_column to its names"
            )
        ids = table[id_column].astype(str)
        if ids.duplicated().any():
            repeated = describe_ids(ids[ids.duplicated()].unique())
            raise InputError(f"metadata table: {id_column} repeats for {repeated}")
        missing = sorted(set(self.image_ids) - set(ids))
        if missing:
            raise InputError(
                f"metadata table has no row for {len(missing)} of {len(self.image_ids)} "
                f"predicted image(s): {describe_ids(missing)}; give a table covering them all"
            )
        kept = dict.fromkeys(c for c in (*METADATA_COLUMNS, source_column) if c)
        columns = [c for c in kept if c in table.columns]
        rows = table.assign(image_id=ids).set_index("image_id").loc[self.image_ids]
        metadata = rows[columns].reset_index()
        return SplitOutputs(self.image_ids, self.logits, self.targets, metadata, source_column)

    def adjusted(self, adjustment: DecisionAdjustment, source: bool = False) -> SplitOutputs:
        """``adjustment`` applied to the logits (``source``: its source-domain form)."""
        rule = adjustment.source if source else adjustment
        return SplitOutputs(
            self.image_ids, rule(self.logits), self.targets, self.metadata, self.source_column
        )


def adapted_for_test(
    model: L.LightningModule, datamodule: DermDataModule, split: str, device
) -> tuple[L.LightningModule, int]:
    """AdaBN (``evaluation.adabn``): a copy of ``model`` with BatchNorm statistics of ``split``'s
    images, through an unsharded loader (every DDP rank adapts on the whole split)."""
    from torch.utils.data import DataLoader

    from dermlit.models.adabn import adapt_batchnorm

    loader = DataLoader(datamodule.dataset(split), batch_size=datamodule.eval_batch_size)
    return adapt_batchnorm(model, loader, device)


def predict_split(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: DermDataModule,
    split: str,
    ckpt_path: str | Path | None = None,
) -> SplitOutputs:
    """Logits of ``split`` through ``trainer.predict`` (the model's ``predict_step`` returns
    ``(logits, targets)``); ids are cut to the batches run (``fast_dev_run`` runs one). The
    ONE route by which dermlit-train and dermlit-eval predict a split."""
    batches = trainer.predict(
        model, dataloaders=datamodule.loader(split), ckpt_path=ckpt_path, return_predictions=True
    )
    world = trainer.world_size
    logits = gather_in_dataset_order(torch.cat([b[0] for b in batches]).float(), world).numpy()
    targets = gather_in_dataset_order(torch.cat([b[1] for b in batches]), world).numpy()
    frame = datamodule.frame(split).iloc[: len(targets)]
    ids = frame["image_id"].astype(str).tolist()
    source = getattr(datamodule, "source_column", None)
    wanted = [*METADATA_COLUMNS, *([source] if source and source not in METADATA_COLUMNS else [])]
    columns = [c for c in wanted if c in frame.columns]
    metadata = frame[["image_id", *columns]].reset_index(drop=True) if columns else None
    return SplitOutputs(ids, logits, targets, metadata, source)


@dataclass
class Evaluation:
    metrics: dict[str, float]
    analysis: Analysis
    report: Report


def in_sample_images(outputs: SplitOutputs, val: SplitOutputs) -> int:
    """How many evaluated images are also among the labelled validation images that the
    temperature, the conformal thresholds and a decision rule are fitted on."""
    fitted = {i for i, t in zip(val.image_ids, val.targets, strict=True) if t >= 0}
    return sum(str(i) in fitted for i in map(str, outputs.image_ids))


def in_sample_note(shared: int, n_images: int, split: str) -> str:
    """The report's warning when the evaluation scores the images it was fitted on
    (``dermlit-eval split=val``): the numbers are in-sample, not held-out evidence."""
    return (
        f"In-sample: {shared} of these {n_images} {split} images are validation images that the "
        "temperature, the conformal thresholds and any decision rule were fitted on, so the "
        "calibration after scaling, the conformal coverage and the adjusted metrics are "
        "in-sample on them, not held-out evidence (coverage is at least 1 - alpha by "
        "construction). Evaluate the test split for held-out numbers."
    )


def write_evaluation(
    out_dir: str | Path,
    outputs: SplitOutputs,
    split: str = "test",
    val: SplitOutputs | None = None,
    settings: EvalSettings | None = None,
    title: str = "dermlit evaluation",
    posthoc: DecisionAdjustment | None = None,
    class_counts: list[int] | None = None,
    explainer: Callable[..., ErrorExplanations | None] | None = None,
    adabn_images: int | None = None,
) -> Evaluation:
    """predictions.csv (and val_predictions.csv), metrics.json with bootstrap CIs and report/.

    ``val``: the validation split's outputs of the SAME weights, for temperature scaling, for
    fitting ``posthoc`` (then applied to both splits; ``class_counts``: the TRAIN counts) and
    for the ``val/*`` point metrics of the final decisions, on which recipes are selected.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    selection: dict[str, float] = {}
    notes: list[str] = []
    if adabn_images is not None:
        from dermlit.models.adabn import adabn_note

        selection.update({f"{split}/adabn": True, f"{split}/adabn_images": adabn_images})
        notes.append(adabn_note(adabn_images))
    if val is not None and (shared := in_sample_images(outputs, val)):
        selection[f"{split}/fitted_in_sample"] = shared
        notes.append(in_sample_note(shared, len(outputs.image_ids), split))
    if val is not None and posthoc is not None and posthoc.fitted_on_validation:
        posthoc.fit(val.logits, val.targets, class_counts)
        if posthoc.transductive:  # the UNLABELLED test logits: no targets go in
            posthoc.fit_target(outputs.logits)
            notes.append(posthoc_note(posthoc, len(outputs.logits)))
        outputs, val = outputs.adjusted(posthoc), val.adjusted(posthoc, source=True)
        selection.update({f"posthoc/{k}": v for k, v in posthoc.params().items()})
    if val is not None and (val.targets >= 0).any() and split != "val":
        keep = val.targets >= 0
        scores = point_metrics(val.probs[keep], val.targets[keep])
        for name in ("macro_f1", "balanced_accuracy", "accuracy", "recall_mel"):
            selection[f"val/{name}"] = scores[name]
    probs = outputs.probs
    write_predictions(
        out_dir / "predictions.csv", predictions_frame(outputs.image_ids, probs, outputs.targets)
    )
    if val is not None:
        frame = predictions_frame(val.image_ids, val.probs, val.targets)
        write_predictions(out_dir / "val_predictions.csv", frame)
    analysis = analyse(
        probs,
        outputs.targets,
        split,
        settings,
        logits=outputs.logits,
        val=None if val is None else (val.logits, val.targets),
        metadata=outputs.metadata,
        source_column=outputs.source_column,
    )
    analysis.metrics.update(selection)
    analysis.notes.extend(notes)
    if explainer is not None and analysis.n_labelled:
        common = analysis.settings.common_classes
        analysis.explanations = explainer(probs, outputs.targets, outputs.image_ids, common)
    write_metrics(out_dir / "metrics.json", analysis.metrics)
    report = write_report(analysis, out_dir / "report", title)
    return Evaluation(analysis.metrics, analysis, report)


def posthoc_note(rule: DecisionAdjustment, n_images: int) -> str:
    """The report's line on a transductive rule (what it estimated from the test images)."""
    from dermlit.evaluation.prior_shift import prior_shift_note

    return prior_shift_note(rule, n_images)  # type: ignore[arg-type]


def headline_rows(metrics: Mapping[str, float], split: str) -> list[tuple[str, str, str]]:
    """(metric, value, interval as ``formatting.ci_label`` writes it: biased and zero-width ones
    say so, with the support)."""
    keys = [f"{split}/{name}" for name in SUMMARY_METRICS]
    keys += [f"{split}/recall_{cls}" for cls in CLASSES if cls != "mel"]
    return [
        (key, fmt(metrics[key]) if _finite(metrics[key]) else "n/a", ci_label(metrics, key))
        for key in keys
        if key in metrics
    ]


def print_summary(metrics: Mapping[str, float], split: str, run_dir: str | Path) -> None:
    table = Table(title=f"{split} metrics (95% bootstrap CI)")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for row in headline_rows(metrics, split):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"Run directory: {Path(run_dir).resolve()}")
