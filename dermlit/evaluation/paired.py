"""Two sets of predictions on the same test images, paired row by row (``dermlit compare``
and ``dermlit compare --groups``): loading, and the refusal naming any difference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermlit.constants import CLASSES
from dermlit.data.validation import describe_ids
from dermlit.evaluation.predictions import read_predictions

#: how this CLI says "the files hold logits" (in the reader's refusal message)
LOGITS_FLAG = "--predictions-are logits"


class TestSetMismatch(ValueError):
    """The two runs were not evaluated on the same labelled images."""


@dataclass
class Predictions:
    name: str
    image_ids: list[str]
    probs: np.ndarray
    targets: np.ndarray

    @classmethod
    def load(cls, path: str | Path, predictions_are: str = "probabilities") -> Predictions:
        """A run directory (its ``predictions.csv``) or a predictions.csv file, validated by
        the reader ``dermlit-eval`` uses (a file of logits needs ``--predictions-are logits``)."""
        path = Path(path)
        csv = path / "predictions.csv" if path.is_dir() else path
        if not csv.is_file():
            raise FileNotFoundError(f"no predictions.csv at {csv}")
        ids, probs, targets = read_predictions(csv, predictions_are, LOGITS_FLAG)
        return cls(str(path), ids, probs, targets)


def align(a: Predictions, b: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs_a, probs_b, targets)`` in A's row order; raises naming any difference."""
    problems = []
    for p in (a, b):
        dup = sorted({i for i in p.image_ids if p.image_ids.count(i) > 1})
        if dup:
            problems.append(f"{p.name} lists image(s) twice: {describe_ids(dup)}")
        if (p.targets < 0).any():
            missing = [i for i, t in zip(p.image_ids, p.targets, strict=True) if t < 0]
            problems.append(f"{p.name} has image(s) without a label: {describe_ids(missing)}")
    only_a = sorted(set(a.image_ids) - set(b.image_ids))
    only_b = sorted(set(b.image_ids) - set(a.image_ids))
    if only_a:
        problems.append(f"image(s) only in A ({a.name}): {describe_ids(only_a)}")
    if only_b:
        problems.append(f"image(s) only in B ({b.name}): {describe_ids(only_b)}")
    if not problems:
        row_b = {i: k for k, i in enumerate(b.image_ids)}
        order = np.array([row_b[i] for i in a.image_ids], dtype=np.int64)
        differ = np.flatnonzero(a.targets != b.targets[order])
        if differ.size:
            ta, tb = a.targets, b.targets[order]
            shown = [f"{a.image_ids[k]} (A {CLASSES[ta[k]]}, B {CLASSES[tb[k]]})" for k in differ]
            problems.append(f"different labels for the same image: {describe_ids(shown)}")
    if problems:
        raise TestSetMismatch(
            "refusing to compare: the test sets differ\n  - " + "\n  - ".join(problems)
        )
    return a.probs, b.probs[order], a.targets
