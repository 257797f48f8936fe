"""The report's conformal, per-source and subgroup sections (kept apart so that report.py stays
small)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES
from dermlit.evaluation.analysis import Analysis
from dermlit.evaluation.conformal import set_size_distribution
from dermlit.evaluation.formatting import ci_label, fmt
from dermlit.evaluation.report_blocks import Report, Table, with_ci
from dermlit.evaluation.sources import SOURCE_METRICS, carrying_sentence

SUBGROUP_SHOWN = ("macro_f1", "balanced_accuracy", "accuracy", "recall_mel", "auroc_macro")


def conformal_section(r: Report, a: Analysis) -> None:
    r.heading("Conformal prediction sets")
    if a.conformal is None:
        r.text("No validation predictions: no conformal sets (they are calibrated there).")
        return
    fitted, pct = a.conformal.thresholds, f"{100 * (1 - a.settings.alpha):.0f}%"
    target = 1 - fitted.alpha
    r.text(
        f"Class-conditional (Mondrian) split conformal sets, alpha = {fitted.alpha:g}: for every "
        f"class, the set holds the true class of at least {target:.0%} of its cases (on average "
        "over calibration draws), calibrated on the validation split's temperature-scaled "
        "probabilities; the score is 1 - p(class). A class with too few validation images for "
        "this alpha is in every set ('always'). Coverage below the target by more than its "
        "interval is a failure of exchangeability between validation and test."
    )
    rows = []
    for c, name in enumerate(CLASSES):
        always = bool(fitted.always_included[c])
        coverage = a.get(f"conformal_coverage_{name}")
        short = coverage is not None and coverage < target and not _covers(a, name, target)
        rows.append(
            [
                name,
                str(int(fitted.n_calibration[c])),
                "always" if always else f"{fitted.thresholds[c]:.4f}",
                with_ci(a, f"conformal_coverage_{name}") + (" (below target)" if short else ""),
                f"{target:.2f}",
                with_ci(a, f"conformal_set_size_{name}"),
            ]
        )
    rows.append(
        [
            "all",
            str(int(fitted.n_calibration.sum())),
            "",
            with_ci(a, "conformal_coverage"),
            f"{target:.2f}",
            with_ci(a, "conformal_set_size"),
        ]
    )
    cols = ["true class", "validation images", "threshold", "coverage", "target", "set size"]
    frame = pd.DataFrame(rows, columns=cols)
    r.table(Table("conformal", f"coverage and mean set size per true class [{pct} CI]", frame))
    counts = set_size_distribution(a.conformal.sets)
    total = max(int(counts.sum()), 1)
    dist = pd.DataFrame(
        {
            "set size": [str(k) for k in range(len(counts))],
            "images": [str(int(n)) for n in counts],
            "share": [f"{n / total:.3f}" for n in counts],
        }
    )
    r.table(Table("conformal_set_sizes", "set-size distribution (the labelled images)", dist))
    r.text(f"Empty sets: {with_ci(a, 'conformal_empty_rate')} of the images.")


def _covers(a: Analysis, name: str, target: float) -> bool:
    high = a.metrics.get(a.key(f"conformal_coverage_{name}_ci_high"))
    return isinstance(high, float) and np.isfinite(high) and high >= target


def subgroup_section(r: Report, a: Analysis) -> None:
    if a.subgroups is None:
        return
    r.heading("Subgroups")
    min_size = a.settings.subgroup_min_size
    r.text(
        f"Metrics per subgroup of the source's metadata ({', '.join(a.settings.subgroup_columns)}"
        f"; age in bands), each with its own bootstrap interval. Subgroups with fewer than "
        f"{min_size} labelled images are flagged 'small': shown, not hidden, but their numbers "
        "and intervals are unreliable. 'unknown': no value recorded."
    )
    if a.subgroups.missing_columns:
        r.text(f"Not in this source's metadata: {', '.join(a.subgroups.missing_columns)}.")
    table = a.subgroups.table
    if table.empty:
        return
    rows = []
    for _, row in table.iterrows():
        prefix = f"subgroup/{row['column']}={row['value']}/"
        cells = [str(row["column"]), str(row["value"]), str(int(row["n_images"]))]
        cells.append(f"small (< {min_size})" if row["small"] else "")
        for m in SUBGROUP_SHOWN:
            key = a.key(prefix + m)
            value = a.metrics.get(key)
            shown = (
                fmt(float(value))
                if isinstance(value, int | float) and np.isfinite(value)
                else "n/a"
            )
            ci = ci_label(a.metrics, key)
            cells.append(shown + (f" {ci}" if ci else ""))
        rows.append(cells)
    cols = ["column", "subgroup", "images", "flag", *SUBGROUP_SHOWN]
    pct = f"{100 * (1 - a.settings.alpha):.0f}%"
    r.table(Table("subgroups", f"per subgroup, value [{pct} CI]", pd.DataFrame(rows, columns=cols)))


def _value_ci(a: Analysis, key: str) -> str:
    value = a.metrics.get(a.key(key))
    ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    ci = ci_label(a.metrics, a.key(key))
    return (fmt(float(value)) if ok else "n/a") + (f" {ci}" if ci else "")


def source_section(r: Report, a: Analysis) -> None:
    """Per source: the headline metrics with CIs, the shares of images and of correct
    decisions (which source carries the headline) and each source's class prior. Absent
    without a source column (``analysis.add_sources`` notes it once at the top)."""
    res = a.sources
    if res is None or res.table.empty:
        return
    r.heading("Per source")
    min_size, pct = a.settings.subgroup_min_size, f"{100 * (1 - a.settings.alpha):.0f}%"
    r.text(
        f"Metrics per source (column `{res.column}` of the data source), each with its own "
        f"bootstrap interval; 'share of correct': the source's part of this split's correct "
        f"decisions. A source with fewer than {min_size} labelled images is flagged 'small'. "
        + carrying_sentence(res, a.get("accuracy") or float("nan"), a.split)
    )
    rows = []
    for _, row in res.table.iterrows():
        prefix = f"source/{row['source']}/"
        cells = [str(row["source"]), str(int(row["n_images"]))]
        cells += [f"{row['share_of_images']:.3f}", f"{row['share_of_correct']:.3f}"]
        cells.append(f"small (< {min_size})" if row["small"] else "")
        cells += [_value_ci(a, prefix + m) for m in SOURCE_METRICS]
        rows.append(cells)
    cols = ["source", "images", "share of images", "share of correct", "flag", *SOURCE_METRICS]
    frame = pd.DataFrame(rows, columns=cols)
    r.table(Table("sources", f"per source, value [{pct} CI]", frame))
    prior = [
        [str(row["source"])] + [f"{row[f'prior_{c}']:.3f}" for c in CLASSES]
        for _, row in res.table.iterrows()
    ]
    support = np.array([a.get(f"support_{c}") or 0.0 for c in CLASSES])
    overall = support / max(support.sum(), 1.0)
    prior.append(["all", *(f"{v:.3f}" for v in overall)])
    frame = pd.DataFrame(prior, columns=["source", *CLASSES])
    r.table(Table("source_priors", "class prior per source (share of its images)", frame))


def explanation_section(r: Report, a: Analysis) -> None:
    ex = a.explanations
    if ex is None:
        return
    r.heading("Explanations of errors (Grad-CAM)")
    r.text(
        f"Grad-CAM (at `{ex.layer}`) of the DECIDED class on the un-augmented input, for the "
        "rare classes called "
        f"common ({', '.join(a.settings.common_classes)}) and then the most confident errors, "
        f"{len(ex.image_ids)} images at most. A map off the lesion (border, ruler, hair, "
        "vignette) points at a shortcut; benchmarks/saliency_in_lesion.py measures how much of "
        "the map falls on the lesion."
    )
    rows = [
        [i, t, p, f"{ex.probs[k, CLASSES.index(p)]:.3f}", kind]
        for k, (i, t, p, kind) in enumerate(
            zip(ex.image_ids, ex.truth, ex.predicted, ex.kinds, strict=True)
        )
    ]
    cols = ["image", "true", "decided", "p(decided)", "kind"]
    r.table(Table("explained_errors", "explained errors", pd.DataFrame(rows, columns=cols)))
    r.figure("gradcam_errors")
