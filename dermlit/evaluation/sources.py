"""Metrics per source (clinic, device, collection) and which sources carry the headline.

HAM10000's four sources differ in case mix: a model with 0.73 accuracy overall scored 0.95 on
vidir_molemax (94 % nv follow-ups) and 0.54 on rosendahl. Per source, every headline metric
gets the whole-set bootstrap of the subgroups (``subgroups.group_metrics``: one route), plus
the source's number of images, its class prior, and its share of the split's images and of the
correct decisions. The column is the one the data source declares (``source_column``,
HAM10000: ``dataset``), never a name known here. Keys: ``<split>/source/<name>/<metric>``
(with ``_ci_low``/``_ci_high``), ``.../n_images``, ``.../small``, ``.../share_of_images``,
``.../share_of_correct``, ``.../prior_<class>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES
from dermlit.evaluation.subgroups import MIN_SIZE, UNKNOWN, group_metrics, subgroup_values

#: the metrics reported per source (each with its CI)
SOURCE_METRICS: tuple[str, ...] = (
    "macro_f1",
    "balanced_accuracy",
    "accuracy",
    "recall_mel",
    "ece",
)


@dataclass
class SourceResult:
    """``table``: one row per source (``source``, ``n_images``, ``small``, shares, metrics with
    CIs, ``prior_<class>``), largest first; ``metrics``: the flat keys."""

    column: str
    metrics: dict[str, float | bool] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


def source_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    sources: Sequence[str] | pd.Series,
    column: str,
    split: str = "test",
    min_size: int = MIN_SIZE,
    metrics: Sequence[str] = SOURCE_METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_alpha: float = 0.05,
) -> SourceResult:
    """Per source (one name per row of ``probs``; empty: ``unknown``), on the labelled rows."""
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    names = subgroup_values(pd.Series(list(sources), name=column))
    if not len(names) == len(t) == len(p):
        raise ValueError(f"probs ({len(p)}), targets ({len(t)}), sources ({len(names)}) differ")
    keep = t >= 0
    p, t, names = p[keep], t[keep], names[keep].to_numpy()
    order = [v for v in pd.Series(names).value_counts().index if v != UNKNOWN]
    order += [UNKNOWN] if UNKNOWN in set(names) else []
    result = SourceResult(column)

    def prefix_of(name: str) -> str:
        return f"{split}/source/{name}/"

    scores, rows = group_metrics(
        p, t, names, order, prefix_of, min_size, metrics, n_resamples, seed, ci_alpha
    )
    result.metrics.update(scores)
    correct = p.argmax(1) == t
    table = []
    for name, row in rows:
        member = names == name
        extra: dict[str, float] = {
            "share_of_images": float(member.mean()),
            "share_of_correct": float(correct[member].sum() / max(int(correct.sum()), 1)),
        }
        prior = np.bincount(t[member], minlength=len(CLASSES)) / max(int(member.sum()), 1)
        extra |= {f"prior_{c}": float(v) for c, v in zip(CLASSES, prior, strict=True)}
        result.metrics.update({prefix_of(name) + k: v for k, v in extra.items()})
        table.append({"source": name, **row, **extra})
    result.table = pd.DataFrame(table)
    return result


def carrying_sentence(result: SourceResult, overall_accuracy: float, split: str = "test") -> str:
    """Which source carries the headline: the one with the largest share of the correct
    decisions, against the source with the lowest accuracy (among those not flagged small,
    when any is)."""
    table = result.table
    if table.empty:
        return ""
    if len(table) == 1:
        only = table.iloc[0]["source"]
        return f"Every {split} image comes from one source, {only}: the headline is that source's."
    top = table.loc[table["share_of_correct"].idxmax()]
    sized = table[~table["small"].astype(bool)]
    pool = sized if len(sized) > 1 else table
    low = pool.loc[pool["accuracy"].idxmin()]
    text = (
        f"The headline accuracy {overall_accuracy:.2f} is carried by {top['source']}: "
        f"{top['accuracy']:.2f} there, {top['share_of_images']:.0%} of the {split} images and "
        f"{top['share_of_correct']:.0%} of the correct decisions"
    )
    if low["source"] != top["source"]:
        text += (
            f"; {low['accuracy']:.2f} on {low['source']} "
            f"({low['share_of_images']:.0%} of the images)"
        )
    ranked = table.sort_values("balanced_accuracy", ascending=False)
    bal = ", ".join(f"{r['source']} {r['balanced_accuracy']:.2f}" for _, r in ranked.iterrows())
    return text + f". Balanced accuracy per source: {bal}."
