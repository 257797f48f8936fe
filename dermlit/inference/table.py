"""The columns of ``dermlit predict``'s CSV, from calibrated probabilities and the run's rules.

``image``, ``MEL,NV,BCC,AKIEC,BKL,DF,VASC`` (ISIC order), ``diagnosis`` (argmax), ``decision``
(the Bayes action under the run's cost matrix), ``refer``/``refer_reason`` (the run's referral
rule), ``prediction_set`` (``mel|nv``, conformal) and ``set_size``; then ``error`` (why an image
has no prediction: it is listed, never dropped) and ``note`` (e.g. a colour conversion).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES, ISIC_COLUMNS
from dermlit.evaluation.conformal import set_strings
from dermlit.evaluation.decisions import bayes_decisions
from dermlit.evaluation.predictions import FLOAT_FORMAT, ISIC_ORDER
from dermlit.inference.run import RunDecisions

COLUMNS = (
    "image",
    *ISIC_COLUMNS,
    "diagnosis",
    "decision",
    "refer",
    "refer_reason",
    "prediction_set",
    "set_size",
    "error",
    "note",
)


def prediction_table(
    names: Sequence[str],
    probs: np.ndarray,
    errors: Sequence[str],
    notes: Sequence[str],
    decisions: RunDecisions,
) -> pd.DataFrame:
    """``probs`` (N, 7) in CLASSES order, NaN rows where ``errors`` is non-empty."""
    p = np.asarray(probs, dtype=np.float64)
    ok = np.asarray([not e for e in errors], dtype=bool)
    n = len(names)
    frame = pd.DataFrame({"image": list(names)})
    for col, idx in zip(ISIC_COLUMNS, ISIC_ORDER, strict=True):
        frame[col] = np.where(ok, p[:, idx], np.nan)
    names_arr = np.asarray(CLASSES, dtype=object)
    diagnosis = np.full(n, "", dtype=object)
    decision = np.full(n, "", dtype=object)
    refer = np.ones(n, dtype=bool)  # no prediction: a person has to look
    reason = np.asarray([f"no prediction: {e}" if e else "" for e in errors], dtype=object)
    sets = np.full(n, "", dtype=object)
    sizes = np.zeros(n, dtype=np.int64)
    if ok.any():
        good = p[ok]
        cost = decisions.settings.cost.matrix
        diagnosis[ok] = names_arr[good.argmax(1)]
        decision[ok] = names_arr[bayes_decisions(good, cost)]
        refer[ok], reason[ok] = decisions.referral.refer(good, cost)
        members = decisions.conformal.prediction_sets(good)
        sets[ok] = set_strings(members)
        sizes[ok] = members.sum(1)
    frame["diagnosis"], frame["decision"] = diagnosis, decision
    frame["refer"], frame["refer_reason"] = refer, reason
    frame["prediction_set"] = sets
    frame["set_size"] = pd.array(np.where(ok, sizes, -1)).astype("Int64")
    frame.loc[~ok, "set_size"] = pd.NA
    frame["error"], frame["note"] = list(errors), list(notes)
    return frame[list(COLUMNS)]


def write_table(frame: pd.DataFrame, path) -> None:
    frame.to_csv(path, index=False, float_format=FLOAT_FORMAT)
