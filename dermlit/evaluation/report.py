"""The evaluation report: report.md, a self-contained report.html (PNGs embedded as base64) and
the PNGs, all in ``report/``; and the same tables and images logged to W&B / TensorBoard.

One list of blocks (headings, paragraphs, tables, figures: ``report_blocks.py``, each rendering
itself) is rendered to both formats, so the two never disagree. Tables are pandas DataFrames of
preformatted strings.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES, MALIGNANT
from dermlit.evaluation.analysis import CALIBRATION, DECISION_KEYS, TS, Analysis
from dermlit.evaluation.formatting import fmt
from dermlit.evaluation.metrics import SPEC_LEVELS
from dermlit.evaluation.plots import FIGURES, row_normalised, save_figures
from dermlit.evaluation.report_blocks import Heading, Report, Table, with_ci
from dermlit.evaluation.report_sections import (
    conformal_section,
    explanation_section,
    source_section,
    subgroup_section,
)

log = logging.getLogger(__name__)

#: the report's headline table (with melanoma sensitivity at the SPEC_LEVELS)
REPORT_METRICS = ("macro_f1", "balanced_accuracy", "accuracy", "auroc_macro", "recall_mel")


INTERVAL_NOTE = (
    "Per metric: percentile interval for means (accuracy, recall, AUROC, Brier, NLL), BCa for "
    "ratios and calibration errors; 'no CI (biased bootstrap)': the resamples lie mostly on one "
    "side of the estimate, so no valid interval exists (always for MCE and class-wise ECE); 'zero width': every "
    "resample gave the same value (too few images, count shown). See "
    "dermlit/evaluation/intervals.py."
)


# ---------------------------------------------------------------------- content
def build_report(a: Analysis, out_dir: Path, title: str = "dermlit evaluation") -> Report:
    r = Report(a.split, out_dir)
    r.images = save_figures(a, out_dir) if a.n_labelled and a.settings.figures else {}
    pct = f"{100 * (1 - a.settings.alpha):.0f}%"
    r.heading(f"{title}: {a.split}", 1)
    r.text(
        f"{a.n_images} images, {a.n_labelled} labelled. Intervals: {pct} bootstrap, "
        f"{a.settings.n_resamples} resamples stratified by true class, seed {a.settings.seed}. "
        + INTERVAL_NOTE
    )
    if a.n_labelled and not a.settings.figures:
        r.text("Figures: off (evaluation.figures=false); the tables below are complete.")
    for note in a.notes:
        r.text(f"Note: {note}")
    if not a.n_labelled:
        return r
    r.heading("Headline metrics")
    names = [*REPORT_METRICS, *(f"mel_sensitivity_at_spec{s}" for s in SPEC_LEVELS)]
    rows = [(a.key(m), with_ci(a, m)) for m in names]  # the metrics.json / logger names
    rows.append((a.key("rare_called_common_rate"), fmt(a.get("rare_called_common_rate"))))
    r.table(Table("headline", f"value [{pct} CI]", _frame(rows, ["metric", "value"])))
    source_section(r, a)  # which sources carry the headline: right after it

    r.heading("Per class")
    per_class = [
        [c, str(int(a.get(f"support_{c}") or 0))]
        + [with_ci(a, f"{m}_{c}") for m in ("precision", "recall", "f1", "auroc")]
        for c in CLASSES
    ]
    cols = ["class", "support", "precision", "recall", "F1", "AUROC (one-vs-rest)"]
    r.table(Table("per_class", f"per class, value [{pct} CI]", _frame(per_class, cols)))
    r.figure("recall_per_class")
    r.figure("roc_mel")

    r.heading("Confusion matrix")
    r.text(
        "Rows: true class, columns: predicted. Highlighted: a rare class called common "
        f"(common = {', '.join(a.settings.common_classes)}); these errors are "
        f"{fmt(a.get('rare_called_common_rate'))} of the rare-class cases."
    )
    assert a.confusion is not None and a.highlight is not None
    shown = a.highlight & (a.confusion > 0)
    counts = pd.DataFrame(a.confusion.astype(str), index=list(CLASSES), columns=list(CLASSES))
    r.table(Table("confusion_counts", "counts", counts.reset_index(names="true"), _pad(shown)))
    shares = pd.DataFrame(
        [[f"{v:.2f}" for v in row] for row in row_normalised(a.confusion)],
        index=list(CLASSES),
        columns=list(CLASSES),
    )
    r.table(
        Table(
            "confusion_normalised", "row-normalised", shares.reset_index(names="true"), _pad(shown)
        )
    )
    r.figure("confusion_matrix")

    r.heading("Calibration")
    if a.temperature is not None:
        r.text(
            f"Temperature scaling: T = {a.temperature:.3f}, fitted on the validation split by "
            "NLL and applied to these logits (argmax unchanged)."
        )
        cal = [(m, with_ci(a, m), with_ci(a, f"{m}{TS}")) for m in CALIBRATION]
        cols = ["metric", "before", f"after (T = {a.temperature:.2f})"]
    else:
        cal = [(m, with_ci(a, m)) for m in CALIBRATION]
        cols = ["metric", "value"]
    r.table(
        Table(
            "calibration",
            f"{a.settings.n_bins} bins, ECE on the top label, [{pct} CI]",
            _frame(cal, cols),
        )
    )
    r.figure("reliability")
    r.figure("reliability_per_class")

    r.heading("Clinical cost")
    cost = a.settings.cost
    r.text(
        f"Cost matrix `{cost.name}` (rows: true, columns: decided; see "
        f"conf/evaluation/cost/{cost.name}.yaml for its source). Malignant: "
        f"{', '.join(MALIGNANT)}. Bayes = the decision of minimum expected cost under the "
        f"{'temperature-scaled' if a.temperature is not None else 'uncalibrated'} probabilities."
    )
    matrix = pd.DataFrame(
        [[f"{v:g}" for v in row] for row in cost.matrix], index=list(CLASSES), columns=CLASSES
    )
    r.table(Table("cost_matrix", f"cost `{cost.name}`", matrix.reset_index(names="true")))
    dec = [[k] + [fmt(a.get(f"{rule}_{k}")) for rule in ("argmax", "bayes")] for k in DECISION_KEYS]
    r.table(Table("decisions", "argmax vs Bayes decisions", _frame(dec, ["", "argmax", "Bayes"])))

    r.heading("Referral (selective prediction)")
    r.text(
        "The model decides the most certain cases and refers the rest to a dermatologist. "
        "Largest coverage at which the accepted cases reach each target (0: never)."
    )
    ref = []
    for metric, target in a.settings.referral_targets.items():
        for score in a.risk_coverage:
            cov = a.get(f"referral_{score}_coverage_for_{metric}")
            thr = a.get(f"referral_{score}_threshold_for_{metric}")
            ref.append([f"{metric} >= {target:g}", score, fmt(cov), fmt(thr, 4)])
    ref_cols = ["target", "defer by", "coverage", "threshold"]
    r.table(Table("referral", "coverage at the configured targets", _frame(ref, ref_cols)))
    r.figure("risk_coverage")

    conformal_section(r, a)
    subgroup_section(r, a)
    explanation_section(r, a)
    r.explanations = a.explanations
    return r


def _frame(rows: Sequence[Sequence[str]], columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame([list(map(str, row)) for row in rows], columns=list(columns))


def _pad(mask: np.ndarray) -> np.ndarray:
    """The mask of a class-by-class table shifted right by its leading ``true`` column."""
    return np.hstack([np.zeros((mask.shape[0], 1), dtype=bool), mask])


# ---------------------------------------------------------------------- rendering
def to_markdown(r: Report) -> str:
    return "\n\n".join(block.to_markdown() for block in r.blocks) + "\n"


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}caption{font-style:italic;text-align:left}
td.hot{background:#f8c4c4;font-weight:bold}img{max-width:100%}figure{margin:1em 0}"""


def to_html(r: Report) -> str:
    """One file with everything inline: opens anywhere, attachable, no broken image links."""
    parts = [block.to_html() for block in r.blocks]
    first = r.blocks[0] if r.blocks else None
    title = html.escape(first.text if isinstance(first, Heading) else "dermlit report")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(a: Analysis, out_dir: str | Path, title: str = "dermlit evaluation") -> Report:
    """report.md, report.html and the PNGs into ``out_dir`` (created)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    r = build_report(a, out_dir, title)
    r.markdown_path.write_text(to_markdown(r))
    r.html_path.write_text(to_html(r))
    return r


# ---------------------------------------------------------------------- loggers
def log_report_to_loggers(loggers: Sequence, report: Report) -> None:
    """Log the report's tables and images to W&B (tables, images, the HTML as an artifact) and
    its images to TensorBoard; other loggers (CSV) get nothing, they hold the scalars only."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    prefix = f"{report.split}/report"
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            run = logger.experiment
            payload = {
                f"{prefix}/{name}": wandb.Table(dataframe=t.frame)
                for name, t in report.tables.items()
            }
            payload |= {
                f"{prefix}/{stem}": wandb.Image(str(path), caption=FIGURES[stem][1])
                for stem, path in report.images.items()
            }
            if report.explanations is not None:
                payload[f"{prefix}/explained_errors"] = explanation_table(
                    wandb, report.explanations
                )
            run.log(payload)
            artifact = wandb.Artifact(f"report-{run.id}-{report.split}", type="report")
            artifact.add_file(str(report.html_path))
            artifact.add_file(str(report.markdown_path))
            run.log_artifact(artifact)
        elif isinstance(logger, TensorBoardLogger):
            from PIL import Image

            for stem, path in report.images.items():
                image = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image(f"{prefix}/{stem}", image, dataformats="HWC")


def explanation_table(wandb, ex) -> object:
    """W&B table of the explained errors: image, overlay, truth, prediction, probabilities."""
    columns = ["image_id", "image", "overlay", "truth", "prediction", "probabilities", "kind"]
    rows = [
        [
            ex.image_ids[k],
            wandb.Image(ex.images[k]),
            wandb.Image(ex.overlays[k]),
            ex.truth[k],
            ex.predicted[k],
            {c: round(float(p), 4) for c, p in zip(CLASSES, ex.probs[k], strict=True)},
            ex.kinds[k],
        ]
        for k in range(len(ex.image_ids))
    ]
    return wandb.Table(columns=columns, data=rows)
