"""Metrics per subgroup of a metadata column (age band, sex, localization, ...) with CIs.

A headline over all images can hide a group the model fails (docs/design.md, "Data": HAM10000's sources and
patients differ a lot). Each subgroup gets the whole-set stratified bootstrap of
``bootstrap.metrics_with_ci`` on its own images; a subgroup smaller than ``min_size`` is
flagged (``.../small: true``), never dropped, and rows without a value form the ``unknown``
subgroup. Keys: ``<split>/subgroup/<column>=<value>/<metric>`` (plus ``_ci_low``/``_ci_high``),
``.../n_images`` and ``.../small``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dermlit.data.validation import describe_ids
from dermlit.evaluation.bootstrap import metrics_with_ci

log = logging.getLogger(__name__)

#: HAM10000's metadata columns (ISIC 2019 names them age_approx, sex, anatom_site_general).
DEFAULT_COLUMNS: tuple[str, ...] = ("age", "sex", "localization")
#: Band edges of numeric columns: age in years -> <30, 30-44, 45-59, 60-74, 75+ (half-open
#: [lower, upper) bands; HAM10000 ages are multiples of 5, 0-85, so each band has 3 ages).
DEFAULT_BANDS: Mapping[str, Sequence[float]] = {"age": (30, 45, 60, 75)}
#: Below this many labelled images a subgroup's metrics are flagged as small.
MIN_SIZE = 30
#: The value of a row whose metadata is missing (NaN, empty, or HAM10000's own "unknown").
UNKNOWN = "unknown"
#: Metrics reported per subgroup (each with its CI); any key of ``point_metrics`` works.
SUBGROUP_METRICS: tuple[str, ...] = (
    "macro_f1",
    "balanced_accuracy",
    "accuracy",
    "auroc_macro",
    "recall_mel",
    "ece",
)


def band_names(edges: Sequence[float]) -> list[str]:
    """``(30, 45)`` -> ``["<30", "30-44", "45+"]`` (integer-year labels of [lower, upper))."""
    e = [float(x) for x in edges]
    if not e or any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise ValueError(f"band edges must be increasing and non-empty, got {list(edges)}")

    def fmt(x: float) -> str:
        return f"{x:g}"

    inner = [
        f"{fmt(a)}-{fmt(b - 1)}" if float(b - a).is_integer() else f"{fmt(a)}-<{fmt(b)}"
        for a, b in zip(e, e[1:], strict=False)
    ]
    return [f"<{fmt(e[0])}", *inner, f"{fmt(e[-1])}+"]


def subgroup_values(values: pd.Series, edges: Sequence[float] | None = None) -> pd.Series:
    """Each row's subgroup name: its band (``edges``) or its stripped text; ``unknown`` where
    missing. A banded column with non-numeric values is refused, naming them."""
    values = pd.Series(values).reset_index(drop=True)
    text = values.astype("string").str.strip()
    missing = values.isna() | text.isna() | (text == "") | (text.str.lower() == UNKNOWN)
    if edges is None:
        return text.where(~missing, UNKNOWN).astype(str)
    numbers = pd.to_numeric(values.where(~missing), errors="coerce")
    bad = ~missing & numbers.isna()
    if bad.any():
        shown = sorted(set(values[bad].astype(str)))
        raise ValueError(
            f"column {values.name!r} has non-numeric value(s) {shown[:5]} but is banded by "
            f"{list(edges)}: fix the metadata or drop the column from the bands"
        )
    names = np.asarray(band_names(edges), dtype=object)
    out = names[np.searchsorted(np.asarray(edges, dtype=float), numbers.fillna(0), side="right")]
    return pd.Series(np.where(missing, UNKNOWN, out), name=values.name, dtype=object).astype(str)


def align_metadata(image_ids: Sequence[str], frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (with an ``image_id`` column) in the order of ``image_ids``; ids
    without a row are refused by name (a silent NaN would move them into ``unknown``)."""
    if "image_id" not in frame.columns:
        raise ValueError(f"metadata needs an 'image_id' column; has {list(frame.columns)}")
    keyed = frame.assign(image_id=frame["image_id"].astype(str))
    repeated = keyed["image_id"][keyed["image_id"].duplicated()].unique()
    if len(repeated):
        raise ValueError(f"metadata has several rows for {describe_ids(repeated)} image(s)")
    indexed = keyed.set_index("image_id", drop=False)
    ids = [str(i) for i in image_ids]
    absent = [i for i in ids if i not in indexed.index]
    if absent:
        raise ValueError(f"no metadata row for {describe_ids(absent)} image(s)")
    return indexed.loc[ids].reset_index(drop=True)


@dataclass
class SubgroupResult:
    """``metrics``: the flat keys; ``table``: one row per subgroup (column, value, n_images,
    small, and each metric with its CI) for the report; ``missing_columns``: asked but absent."""

    metrics: dict[str, float | bool] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    missing_columns: list[str] = field(default_factory=list)


def _ordered(groups: pd.Series, edges: Sequence[float] | None) -> list[str]:
    """Bands in band order, other values by size; ``unknown`` last."""
    present = set(groups)
    if edges is not None:
        order = [b for b in band_names(edges) if b in present]
    else:
        order = [v for v in groups.value_counts().index if v != UNKNOWN]
    return order + ([UNKNOWN] if UNKNOWN in present else [])


def subgroup_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    metadata: pd.DataFrame,
    split: str = "test",
    columns: Sequence[str] = DEFAULT_COLUMNS,
    bands: Mapping[str, Sequence[float]] = DEFAULT_BANDS,
    min_size: int = MIN_SIZE,
    metrics: Sequence[str] = SUBGROUP_METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_alpha: float = 0.05,
) -> SubgroupResult:
    """Metrics with bootstrap CIs per subgroup of each of ``columns`` on the labelled rows.

    ``metadata`` has one row per row of ``probs`` (see :func:`align_metadata`). A column that
    ``metadata`` lacks is listed in ``missing_columns`` and logged, not an error: sources
    differ in what they record.
    """
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    if len(metadata) != len(t) or len(p) != len(t):
        raise ValueError(
            f"probs ({len(p)}), targets ({len(t)}) and metadata ({len(metadata)}) rows differ"
        )
    result = SubgroupResult(missing_columns=[c for c in columns if c not in metadata.columns])
    if result.missing_columns:
        log.warning("subgroups: metadata has no column(s) %s", result.missing_columns)
    labelled = t >= 0
    rows = []
    for column in (c for c in columns if c in metadata.columns):
        edges = bands.get(column)
        groups = subgroup_values(metadata[column].reset_index(drop=True), edges)[labelled]
        scores, table = group_metrics(
            p[labelled],
            t[labelled],
            groups.to_numpy(),
            _ordered(groups, edges),
            lambda value, column=column: f"{split}/subgroup/{column}={value}/",
            min_size,
            metrics,
            n_resamples,
            seed,
            ci_alpha,
        )
        result.metrics.update(scores)
        rows += [{"column": column, "value": value, **row} for value, row in table]
    result.table = pd.DataFrame(rows)
    return result


def group_metrics(
    probs: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    order: Sequence[str],
    prefix_of: Callable[[str], str],
    min_size: int = MIN_SIZE,
    metrics: Sequence[str] = SUBGROUP_METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    ci_alpha: float = 0.05,
) -> tuple[dict[str, float | bool], list[tuple[str, dict[str, object]]]]:
    """The ONE per-group route (subgroups here, sources in ``evaluation/sources.py``): for each
    group of ``order``, ``metrics`` with the whole-set bootstrap on its labelled rows, keyed
    ``prefix_of(group) + metric`` (plus ``n_images``, ``small``); and one table row per group."""
    out: dict[str, float | bool] = {}
    rows = []
    for value in order:
        member = groups == value
        prefix, n = prefix_of(value), int(member.sum())
        scores = metrics_with_ci(
            probs[member],
            targets[member],
            prefix="",
            n_resamples=n_resamples,
            seed=seed,
            alpha=ci_alpha,
        )
        unknown = [m for m in metrics if m not in scores]
        if unknown:
            raise KeyError(f"unknown subgroup metric(s) {unknown}; known: {sorted(scores)}")
        row: dict[str, object] = {"n_images": n, "small": n < min_size}
        out[f"{prefix}n_images"] = n
        out[f"{prefix}small"] = n < min_size
        for m in metrics:
            for suffix in ("", "_ci_low", "_ci_high"):
                if f"{m}{suffix}" in scores:
                    out[f"{prefix}{m}{suffix}"] = scores[f"{m}{suffix}"]
                    row[f"{m}{suffix}"] = scores[f"{m}{suffix}"]
        rows.append((value, row))
    return out, rows
