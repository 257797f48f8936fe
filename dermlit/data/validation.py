"""Checks an index table before training, so bad input is named instead of silently lost.

Every problem is reported with the offending ids (the first few and the count). The policy is
``raise`` (default: a :class:`DataValidationError` listing every problem) or ``skip`` (drop the
offending rows, log them, keep them in :attr:`ValidationReport.skipped` for the run directory).
Some problems cannot be skipped (e.g. one image id with two different labels: dropping either
row would pick a ground truth); those raise under ``skip`` too, saying what to do instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from dermlit.constants import CLASSES
from dermlit.errors import InputError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
SHOWN_IDS = 5

DUPLICATE = "duplicate image_id"
CONFLICTING_LABELS = "one image id with different labels"
CONFLICT_ADVICE = "the ground truth is ambiguous: keep the one right row per image"


class DataValidationError(InputError):
    """Raised when a dataset fails validation and the policy is ``raise``."""


def describe_ids(ids: Iterable[str], shown: int = SHOWN_IDS) -> str:
    """``"3 (a, b, c)"`` or ``"12 (a, b, c, d, e, ...)"``: the count and the first few ids."""
    ids = list(ids)
    head = ", ".join(str(i) for i in ids[:shown])
    more = ", ..." if len(ids) > shown else ""
    return f"{len(ids)} ({head}{more})"


@dataclass
class ValidationReport:
    """Problems found in one dataset, by kind: ``{kind: [(image_id, detail), ...]}``;
    ``unskippable``: the kinds ``on_error=skip`` cannot resolve, with what to do instead."""

    dataset: str
    problems: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    unskippable: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, image_id: str, detail: str = "", unskippable: str = "") -> None:
        """``unskippable``: this kind cannot be skipped; the text says what to do instead."""
        self.problems.setdefault(kind, []).append((str(image_id), detail))
        if unskippable:
            self.unskippable[kind] = unskippable

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_ids(self) -> set[str]:
        return {i for rows in self.problems.values() for i, _ in rows}

    def message(self) -> str:
        lines = [f"{self.dataset}: {len(self.bad_ids)} image(s) failed validation"]
        for kind, rows in self.problems.items():
            shown = [f"{i}: {d}" if d else i for i, d in rows]
            lines.append(f"  - {kind}: {describe_ids(shown)}")
        for kind, advice in self.unskippable.items():
            lines.append(f"  {kind} cannot be skipped (data.on_error=skip): {advice}")
        if set(self.problems) - set(self.unskippable):
            what = "the other" if self.unskippable else "these"
            lines.append(
                f"  Fix the data, or set data.on_error=skip to drop {what} images (logged, "
                "and listed in skipped.csv in the output directory)."
            )
        return "\n".join(lines)

    @property
    def skipped(self) -> pd.DataFrame:
        """One row per problem as :func:`apply_policy` resolves it under ``skip``: an id's
        rows are dropped, except that a plain duplicate drops only its repeated rows."""
        other = {i for k, v in self.problems.items() if k != DUPLICATE for i, _ in v}
        rows = []
        for kind, found in self.problems.items():
            for image_id, detail in found:
                if kind == DUPLICATE and not detail:
                    first = "dropped too (its other problem)" if image_id in other else "kept"
                    detail = f"a repeated row (same label) dropped; the first row {first}"
                rows.append((image_id, kind, detail))
        return pd.DataFrame(rows, columns=["image_id", "problem", "detail"])


def report_conflicts(
    ids: Sequence[str],
    meaning: pd.DataFrame | pd.Series,
    report: ValidationReport,
    describe: Callable[[list[int]], str],
) -> list[str]:
    """Ids listed more than once whose rows differ in ``meaning`` (what each row says the label
    is; positionally aligned with ``ids``), each an unskippable problem whose detail is
    ``describe(positions of its rows)``. Returns those ids in order of first appearance.

    Dropping either row would pick a ground truth, so ``on_error=skip`` refuses them; rows that
    agree are a plain duplicate (:func:`check_index`), which ``skip`` resolves by keeping one.
    """
    ids = pd.Series(list(ids), dtype=object).astype(str)
    meaning = meaning.reset_index(drop=True)
    repeated = ids[ids.duplicated(keep=False)]
    conflicting = []
    for image_id, rows in repeated.groupby(repeated, sort=False):
        positions = rows.index.tolist()
        if len(meaning.iloc[positions].drop_duplicates()) == 1:
            continue
        conflicting.append(str(image_id))
        report.add(CONFLICTING_LABELS, image_id, describe(positions), unskippable=CONFLICT_ADVICE)
    return conflicting


def check_index(
    df: pd.DataFrame,
    dataset: str,
    allow_unlabelled: bool = False,
    report: ValidationReport | None = None,
) -> ValidationReport:
    """Metadata checks that need no decoding: unknown labels, duplicate ids, missing files.

    A repeated id whose rows agree on the label is a ``duplicate image_id`` (one record per
    repeated row: ``skip`` drops the repeats, keeps the first row); one whose rows disagree is
    an unskippable conflict (:func:`report_conflicts`).
    ``allow_unlabelled``: an empty label means "unknown" (prediction-only sources), not an error.
    ``report``: add to the problems a source has already found (else a new report).
    """
    report = ValidationReport(dataset) if report is None else report
    unknown = ~df["label"].isin(CLASSES)
    if allow_unlabelled:
        unknown &= df["label"] != ""
    for image_id, label in df.loc[unknown, ["image_id", "label"]].itertuples(index=False):
        report.add("unknown label", image_id, repr(label))
    ids = df["image_id"].astype(str).reset_index(drop=True)
    labels = df["label"].reset_index(drop=True)

    def shown(positions: list[int]) -> str:
        return "labels " + ", ".join(repr(labels.iat[p]) for p in positions)

    conflicting = report_conflicts(ids, labels, report, shown)
    for image_id in ids[ids.duplicated(keep="first") & ~ids.isin(conflicting)]:
        report.add(DUPLICATE, image_id)
    for image_id, path in df[["image_id", "path"]].itertuples(index=False):
        if not Path(path).is_file():
            report.add("missing image file", image_id, str(path))
    return report


def apply_policy(df: pd.DataFrame, report: ValidationReport, on_error: OnError) -> pd.DataFrame:
    """Raise with the full report, or drop the offending rows and log what was dropped."""
    if report.ok:
        return df
    if on_error == "raise":
        raise DataValidationError(report.message())
    if on_error != "skip":
        raise ValueError(f"data.on_error must be 'raise' or 'skip', got {on_error!r}")
    if report.unskippable:
        raise DataValidationError(report.message())
    log.warning("Skipping invalid images:\n%s", report.message())
    keep = ~df["image_id"].astype(str).isin(report.bad_ids)
    # a duplicated id (rows that agree: conflicts raised above) is bad, but its first row is kept
    dup_first = df["image_id"].isin([i for i, _ in report.problems.get(DUPLICATE, [])])
    keep |= dup_first & ~df["image_id"].duplicated(keep="first")
    other_bad = {i for k, rows in report.problems.items() if k != DUPLICATE for i, _ in rows}
    keep &= ~df["image_id"].astype(str).isin(other_bad)
    return df.loc[keep].reset_index(drop=True)
