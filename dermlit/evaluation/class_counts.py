"""The TRAIN images per class of a run: the prior of post-hoc rules (``posthoc=logit_adjust``,
prior-EM without calibration), read from the run's splits.csv or, in an archived run or an
evaluation's output (no per-image list of the dataset is ever kept there), from the
:data:`CLASS_COUNTS_FILE` that dermlit-train and dermlit-eval write beside their metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from dermlit.constants import CLASSES
from dermlit.errors import InputError

#: the TRAIN counts per class name, written beside metrics.json: what ``dermlit archive``
#: keeps in place of splits.csv, a list of the dataset's images
CLASS_COUNTS_FILE = "class_counts.json"


def write_class_counts(folder: Path, counts: list[int]) -> Path:
    """:data:`CLASS_COUNTS_FILE` in ``folder``: the TRAIN images per class name, what
    :func:`train_class_counts` reads where there is no splits.csv (seven numbers, no image)."""
    path = Path(folder) / CLASS_COUNTS_FILE
    path.write_text(json.dumps(dict(zip(CLASSES, counts, strict=True)), indent=2) + "\n")
    return path


def train_class_counts(splits_csv: Path, posthoc=None) -> list[int] | None:
    """TRAIN images per class (the prior of post-hoc adjustment) from a run's splits.csv or,
    without one (an archived run), the :data:`CLASS_COUNTS_FILE` beside it; None without
    either, unless the ``posthoc`` rule needs the prior: then an InputError naming both."""
    if splits_csv.is_file():
        frame = pd.read_csv(splits_csv)
        counts = frame.loc[frame["split"] == "train", "label"].value_counts()
        return [int(counts.get(c, 0)) for c in CLASSES]
    counts_json = splits_csv.with_name(CLASS_COUNTS_FILE)
    if counts_json.is_file():
        try:
            named = json.loads(counts_json.read_text())
        except ValueError as err:
            raise InputError(f"{counts_json} is not valid JSON: {err}") from None
        counts_ok = isinstance(named, dict) and not set(named) - set(CLASSES)
        if not counts_ok or not all(type(v) is int and v >= 0 for v in named.values()):
            raise InputError(
                f"{counts_json} must map class names {list(CLASSES)} to TRAIN image counts, "
                f"got {named!r}"
            )
        return [int(named.get(c, 0)) for c in CLASSES]

    def needs_prior(rule) -> bool:
        from dermlit.evaluation.posthoc import LogitAdjustment
        from dermlit.evaluation.prior_shift import PriorEM

        if isinstance(rule, PriorEM):
            return not rule.calibrate or needs_prior(rule.decision)
        return isinstance(rule, LogitAdjustment)

    if needs_prior(posthoc):
        raise InputError(
            f"posthoc {type(posthoc).__name__} needs the TRAIN class counts (the prior), and "
            f"neither {splits_csv} nor {counts_json} exists: evaluate the run directory itself "
            f"(its splits.csv) or an archived run that has {CLASS_COUNTS_FILE} (dermlit-train "
            "writes it, dermlit archive keeps it), or use a rule without a prior "
            "(posthoc=class_bias)"
        )
    return None
