"""predictions.csv in the ISIC 2018 Task 3 submission format, plus the true label.

Columns: ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` (probabilities, each row sums to 1) and
``label`` (our class name, empty when unknown). Our internal order is :data:`CLASSES`.

Reading validates the file: a row that is not a probability vector is refused with its image id
and line, never renormalised (a row of zeros would otherwise become 1/7 for every class). A file
of logits is read as such only when the caller says so (``predictions_are="logits"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from dermlit.constants import CLASS_TO_INDEX, CLASSES, ISIC_COLUMNS, ISIC_TO_CLASS
from dermlit.data.validation import describe_ids
from dermlit.errors import InputError

#: position in our class order of each ISIC column
ISIC_ORDER = [CLASS_TO_INDEX[ISIC_TO_CLASS[c]] for c in ISIC_COLUMNS]
#: what the numbers of a predictions file are: probabilities (rows sum to 1) or logits
#: (unnormalised scores, softmaxed on reading)
PREDICTIONS_ARE = ("probabilities", "logits")
#: how predictions files write a probability: pandas' default, the shortest text that reads back
#: as the same float64 (repr), so that a metric recomputed from the file is the run's own. With 6
#: decimals (before) every probability < 5e-7 became 0 and every one > 1 - 5e-7 became 1: whole
#: class columns of a confident model read back as 0, its AUROC from the file was up to 0.12
#: below the run's, and the NLL of a true class written as 0 was -log(eps).
FLOAT_FORMAT = None
#: |row sum - 1| allowed for probabilities. Files written with 6 decimals (dermlit before
#: FLOAT_FORMAT, other tools) move a row sum by <= 3.5e-6; 1e-3 also admits files written with 4
#: decimals (<= 3.5e-4) and float16 softmax outputs; a row further from 1 is not rounding.
SUM_TOLERANCE = 1e-3
#: how dermlit-eval spells "this file holds logits" (dermlit compare passes its own flag)
LOGITS_OPTION = "predictions_are=logits"


class PredictionsFileError(InputError):
    """A predictions file that cannot be used as it is (the message lists its bad rows)."""


def predictions_frame(
    image_ids: Sequence[str], probs: np.ndarray, targets: Sequence[int] | None = None
) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES) or len(probs) != len(image_ids):
        raise ValueError(f"probs must be ({len(image_ids)}, {len(CLASSES)}), got {probs.shape}")
    frame = pd.DataFrame(probs[:, ISIC_ORDER], columns=list(ISIC_COLUMNS))
    frame.insert(0, "image", [str(i) for i in image_ids])
    if targets is None:
        frame["label"] = ""
    else:
        frame["label"] = [CLASSES[t] if t >= 0 else "" for t in np.asarray(targets)]
    return frame


def write_predictions(path: str | Path, frame: pd.DataFrame) -> None:
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT)


def _row_problems(
    ids: np.ndarray, raw: pd.DataFrame, values: np.ndarray, predictions_are: str
) -> dict[str, list[tuple[int, str]]]:
    """``{kind: [(row, "image (line N: detail)"), ...]}`` for every row failing a check."""
    columns = np.asarray(ISIC_COLUMNS)
    problems: dict[str, list[tuple[int, str]]] = {}

    def add(kind: str, row: int, detail: str) -> None:
        problems.setdefault(kind, []).append((row, f"{ids[row]} (line {row + 2}: {detail})"))

    bad_cell = ~np.isfinite(values)
    for row in np.flatnonzero(bad_cell.any(1)):
        cells = ", ".join(f"{c}={raw.iloc[row][c]!r}" for c in columns[bad_cell[row]])
        add("empty, NaN, infinite or non-numeric cell", row, cells)
    if predictions_are == "logits":
        return problems
    finite = ~bad_cell.any(1)
    outside = finite & ((values < 0) | (values > 1)).any(1)
    for row in np.flatnonzero(outside):
        shown = [f"{c}={v:g}" for c, v in zip(columns, values[row], strict=True) if not 0 <= v <= 1]
        add("value outside [0, 1]", row, ", ".join(shown))
    sums = values.sum(1)
    for row in np.flatnonzero(finite & ~outside & (np.abs(sums - 1) > SUM_TOLERANCE)):
        add(f"row not summing to 1 (+-{SUM_TOLERANCE:g})", row, f"sum {sums[row]:.6g}")
    return problems


def _refusal(
    path: str | Path,
    n_rows: int,
    problems: dict[str, list[tuple[int, str]]],
    predictions_are: str,
    logits_option: str,
) -> str:
    n_bad = len({row for rows in problems.values() for row, _ in rows})
    if predictions_are == "logits":
        rule = "each row must be 7 finite numbers"
        advice = "Fix or remove these rows."
    else:
        rule = (
            f"each row must be 7 numbers in [0, 1] summing to 1 within {SUM_TOLERANCE:g}; "
            "dermlit does not renormalise"
        )
        advice = (
            f"If the file holds logits (unnormalised scores), give {logits_option} (they are "
            "then softmaxed); otherwise fix or remove these rows."
        )
    lines = [f"{path}: {n_bad} of {n_rows} row(s) are not usable as {predictions_are} ({rule}):"]
    lines += [f"  - {kind}: {describe_ids(t for _, t in rows)}" for kind, rows in problems.items()]
    lines.append(f"  {advice}")
    return "\n".join(lines)


def read_scores(
    path: str | Path, predictions_are: str = "probabilities", logits_option: str = LOGITS_OPTION
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image_ids, values in CLASSES order, targets)`` of a validated predictions file;
    targets are -1 where unknown. ``values`` are what the file holds (see :func:`read_predictions`).

    ``predictions_are="probabilities"``: every cell in [0, 1], every row summing to 1 within
    :data:`SUM_TOLERANCE`; ``"logits"``: finite numbers, and not all rows probability vectors
    (softmaxing probabilities would flatten them). Raises :class:`PredictionsFileError` naming
    the file, the first bad rows' image ids and lines, and their count; ``logits_option`` is how
    the calling CLI spells "this file holds logits".
    """
    if predictions_are not in PREDICTIONS_ARE:
        raise PredictionsFileError(
            f"predictions_are must be one of {PREDICTIONS_ARE}, got {predictions_are!r}"
        )
    if not Path(path).is_file():
        raise PredictionsFileError(f"{path}: no such file")
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = [c for c in ("image", *ISIC_COLUMNS) if c not in frame.columns]
    if missing:
        raise PredictionsFileError(f"{path}: not a predictions file, missing column(s) {missing}")
    if len(frame) == 0:
        raise PredictionsFileError(f"{path}: a predictions file without rows")
    raw = frame[list(ISIC_COLUMNS)]
    values = np.column_stack(
        [pd.to_numeric(raw[c].str.strip(), errors="coerce").to_numpy(np.float64) for c in raw]
    )
    ids = frame["image"].to_numpy(dtype=str)
    problems = _row_problems(ids, raw, values, predictions_are)
    if problems:
        raise PredictionsFileError(
            _refusal(path, len(frame), problems, predictions_are, logits_option)
        )
    if predictions_are == "logits" and not _row_problems(ids, raw, values, "probabilities"):
        raise PredictionsFileError(
            f"{path}: {logits_option} was given, but every row is a probability vector (in "
            "[0, 1], summing to 1): softmaxing probabilities again would flatten them; drop it"
        )
    labels = (
        frame["label"].str.strip() if "label" in frame.columns else pd.Series([""] * len(frame))
    )
    unknown = sorted(set(labels) - set(CLASSES) - {""})
    if unknown:
        raise PredictionsFileError(
            f"{path}: unknown label(s) {unknown}; a label is one of {list(CLASSES)} or empty"
        )
    out = np.empty_like(values)
    out[:, ISIC_ORDER] = values
    targets = np.array([CLASS_TO_INDEX.get(x, -1) for x in labels], dtype=np.int64)
    return ids.tolist(), out, targets


def read_predictions(
    path: str | Path, predictions_are: str = "probabilities", logits_option: str = LOGITS_OPTION
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image_ids, probs in CLASSES order, targets)``; targets are -1 where unknown.

    A file of logits (``predictions_are="logits"``) is softmaxed; validation as in
    :func:`read_scores`."""
    ids, values, targets = read_scores(path, predictions_are, logits_option)
    probs = softmax(values, axis=1) if predictions_are == "logits" else values
    return ids, probs, targets
