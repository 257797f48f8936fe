"""The report's figures (matplotlib, Agg backend: no display needed, safe in workers).

Each function takes an :class:`Analysis` and returns a Figure, or None when the data for it is
missing (e.g. no melanoma in the set, no temperature scaling); ``save_figures`` writes PNGs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dermlit.constants import CLASSES  # noqa: E402
from dermlit.evaluation.analysis import Analysis  # noqa: E402
from dermlit.evaluation.calibration import ReliabilityCurve  # noqa: E402
from dermlit.evaluation.formatting import interval_text  # noqa: E402

DPI = 110


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each true class's row as shares (recall on the diagonal); zero rows stay zero."""
    totals = confusion.sum(1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def confusion_figure(a: Analysis) -> Figure | None:
    if a.confusion is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), constrained_layout=True)
    shares = row_normalised(a.confusion)
    for ax, values, title in (
        (axes[0], a.confusion, "counts"),
        (axes[1], shares, "row-normalised (recall on the diagonal)"),
    ):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(CLASSES)):
            for j in range(len(CLASSES)):
                text = f"{values[i, j]:.2f}" if values is shares else str(values[i, j])
                colour = "white" if shares[i, j] > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
                if a.highlight is not None and a.highlight[i, j] and a.confusion[i, j] > 0:
                    ax.add_patch(
                        plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2)
                    )
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.suptitle(f"{a.split}: confusion matrix (red: rare class called common)")
    return fig


def _reliability(ax, curve: ReliabilityCurve, label: str, colour: str) -> None:
    full = curve.counts > 0
    ax.bar(
        curve.centers[full],
        curve.accuracy[full],
        width=np.diff(curve.edges)[full],
        alpha=0.35,
        color=colour,
        edgecolor=colour,
        label=label,
    )
    ax.plot(curve.confidence[full], curve.accuracy[full], "o-", color=colour, ms=3)


def reliability_figure(a: Analysis) -> Figure | None:
    """Top-label reliability (accuracy against confidence), before and after scaling."""
    if "before" not in a.reliability:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5.2), constrained_layout=True)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ece = a.get("ece")
    _reliability(ax, a.reliability["before"], f"model (ECE {ece:.3f})", "tab:blue")
    if "after" in a.reliability:
        label = f"T = {a.temperature:.2f} (ECE {a.get('ece_ts'):.3f})"
        _reliability(ax, a.reliability["after"], label, "tab:orange")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top label)", ylabel="accuracy")
    ax.set_title(f"{a.split}: reliability diagram, {a.settings.n_bins} bins")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def class_reliability_figure(a: Analysis) -> Figure | None:
    """Per class: predicted P(class) against the observed frequency of the class."""
    if "before" not in a.class_reliability:
        return None
    fig, axes = plt.subplots(2, 4, figsize=(14, 7), constrained_layout=True)
    for c, ax in enumerate(axes.flat[: len(CLASSES)]):
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        _reliability(ax, a.class_reliability["before"][c], "model", "tab:blue")
        if "after" in a.class_reliability:
            _reliability(ax, a.class_reliability["after"][c], "temperature-scaled", "tab:orange")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=CLASSES[c])
        ax.set_xlabel(f"P({CLASSES[c]})", fontsize=8)
        ax.set_ylabel("frequency", fontsize=8)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    axes.flat[-1].axis("off")
    fig.suptitle(f"{a.split}: class-wise reliability")
    return fig


def recall_figure(a: Analysis) -> Figure | None:
    """Per-class recall with its bootstrap CI; support under each bar."""
    if a.confusion is None:
        return None
    recall = [a.get(f"recall_{c}") for c in CLASSES]
    low = [a.get(f"recall_{c}_ci_low") for c in CLASSES]
    high = [a.get(f"recall_{c}_ci_high") for c in CLASSES]
    x = np.arange(len(CLASSES))
    value = np.array([np.nan if r is None else r for r in recall])
    err = np.array(
        [
            [0.0, 0.0] if r is None or lo is None else [r - lo, hi - r]
            for r, lo, hi in zip(recall, low, high, strict=True)
        ]
    ).T
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    ax.bar(x, np.nan_to_num(value), yerr=err, capsize=4, color="tab:blue", alpha=0.8)
    support = a.confusion.sum(1)
    ax.set_xticks(x, [f"{c}\nn={n}" for c, n in zip(CLASSES, support, strict=True)])
    ax.set(ylim=(0, 1.05), ylabel="recall (sensitivity)")
    bal = a.get("balanced_accuracy")
    if bal is not None:
        ax.axhline(bal, color="k", ls=":", lw=1, label=f"balanced accuracy {bal:.3f}")
        ax.legend(fontsize=8)
    ax.set_title(f"{a.split}: recall per class, {100 * (1 - a.settings.alpha):.0f}% bootstrap CI")
    return fig


def risk_coverage_figure(a: Analysis) -> Figure | None:
    if not a.risk_coverage:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    names = {"confidence": "defer low confidence", "expected_cost": "defer high expected cost"}
    for score, rc in a.risk_coverage.items():
        aurc = a.get(f"aurc_{score}")
        ax.step(rc.coverage, rc.risk, where="post", label=f"{names[score]} (AURC {aurc:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (share decided by the model)")
    ax.set_ylabel("risk (error rate of accepted cases)")
    ax.set_title(f"{a.split}: risk-coverage (decisions: cost {a.settings.cost.name})")
    ax.legend(fontsize=8)
    return fig


def roc_mel_figure(a: Analysis) -> Figure | None:
    if a.roc_mel is None:
        return None
    fpr, tpr = a.roc_mel
    fig, ax = plt.subplots(figsize=(5.2, 5), constrained_layout=True)
    auc, lo, hi = a.get("auroc_mel"), a.get("auroc_mel_ci_low"), a.get("auroc_mel_ci_high")
    ci = f" {interval_text(lo, hi)}" if lo is not None and hi is not None else ""  # none: biased
    ax.plot(fpr, tpr, color="tab:red", label=f"melanoma vs rest, AUROC {auc:.3f}{ci}")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for spec in (80, 90, 95):
        sens = a.get(f"mel_sensitivity_at_spec{spec}")
        if sens is not None:
            ax.plot(1 - spec / 100, sens, "ko", ms=4)
            ax.annotate(
                f"{sens:.2f} @ spec {spec}%",
                (1 - spec / 100, sens),
                fontsize=7,
                xytext=(5, -10),
                textcoords="offset points",
            )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(f"{a.split}: ROC for melanoma")
    ax.legend(loc="lower right", fontsize=8)
    return fig


#: file stem -> (figure factory, caption)
def explanation_figure(explanations) -> Figure:
    from dermlit.explain.review import explanation_figure as draw

    return draw(explanations)


FIGURES: dict[str, tuple[Callable[[Analysis], Figure | None], str]] = {
    "confusion_matrix": (confusion_figure, "Confusion matrix, counts and row-normalised"),
    "reliability": (reliability_figure, "Reliability diagram (top label)"),
    "reliability_per_class": (class_reliability_figure, "Reliability diagram per class"),
    "recall_per_class": (recall_figure, "Recall per class with bootstrap CI"),
    "risk_coverage": (risk_coverage_figure, "Risk-coverage curve (referral)"),
    "roc_mel": (roc_mel_figure, "ROC curve for melanoma"),
    "gradcam_errors": (
        lambda a: explanation_figure(a.explanations) if a.explanations is not None else None,
        "Grad-CAM of the decided class on errors: rare classes called common, then the most "
        "confident errors (input | overlay)",
    ),
}


def save_figures(a: Analysis, out_dir: Path) -> dict[str, Path]:
    """Write every available figure as ``out_dir/<stem>.png``; returns stem -> path."""
    paths = {}
    for stem, (factory, _) in FIGURES.items():
        fig = factory(a)
        if fig is None:
            continue
        paths[stem] = out_dir / f"{stem}.png"
        fig.savefig(paths[stem], dpi=DPI)
        plt.close(fig)
    return paths
