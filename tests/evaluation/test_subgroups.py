"""Subgroup metrics: per-group values against scikit-learn, bands, flags, keys, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from dermlit.constants import CLASS_TO_INDEX, CLASSES
from dermlit.evaluation.subgroups import (
    align_metadata,
    band_names,
    subgroup_metrics,
    subgroup_values,
)

K = len(CLASSES)
PRIOR = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015


def make_problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    t = rng.choice(K, n, p=PRIOR)
    logits = rng.normal(size=(n, K)) * 2.0
    logits[np.arange(n), t] += 2.5
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    meta = pd.DataFrame(
        {
            "image_id": [f"ISIC_{i:07d}" for i in range(n)],
            "age": rng.choice([5.0, 25.0, 30.0, 40.0, 45.0, 70.0, 80.0, np.nan], n),
            "sex": rng.choice(["male", "female", "unknown"], n, p=[0.5, 0.45, 0.05]),
            "localization": rng.choice(
                ["back", "face", "acral", None], n, p=[0.62, 0.31, 0.02, 0.05]
            ),
        }
    )
    return p, t, meta


def test_band_names_and_values():
    assert band_names((30, 45, 60, 75)) == ["<30", "30-44", "45-59", "60-74", "75+"]
    assert band_names((2.5,)) == ["<2.5", "2.5+"]
    ages = pd.Series([0.0, 29.0, 30.0, 44.0, 45.0, 74.0, 75.0, 85.0, np.nan], name="age")
    got = subgroup_values(ages, (30, 45, 60, 75)).tolist()
    assert got == ["<30", "<30", "30-44", "30-44", "45-59", "60-74", "75+", "75+", "unknown"]
    sex = pd.Series([" male", "female", "unknown", None, ""], name="sex")
    assert subgroup_values(sex).tolist() == ["male", "female", "unknown", "unknown", "unknown"]
    with pytest.raises(ValueError, match=r"'age' has non-numeric value\(s\) \['forty'\]"):
        subgroup_values(pd.Series([40, "forty"], name="age"), (30,))
    with pytest.raises(ValueError, match="increasing"):
        band_names((45, 30))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_each_subgroup_matches_sklearn_on_its_rows():
    p, t, meta = make_problem(1200)
    t[-40:] = -1  # unlabelled rows are left out of every subgroup
    res = subgroup_metrics(p, t, meta, split="test", n_resamples=200, min_size=30)
    lab = t >= 0
    groups = {
        "age": subgroup_values(meta["age"], (30, 45, 60, 75)),
        "sex": subgroup_values(meta["sex"]),
        "localization": subgroup_values(meta["localization"]),
    }
    n_checked = 0
    for column, values in groups.items():
        for value in set(values[lab]):
            rows = lab & (values == value).to_numpy()
            y, pred = t[rows], p[rows].argmax(1)
            pre = f"test/subgroup/{column}={value}/"
            assert res.metrics[f"{pre}n_images"] == rows.sum()
            assert res.metrics[f"{pre}small"] is bool(rows.sum() < 30)
            assert res.metrics[f"{pre}accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
            assert res.metrics[f"{pre}balanced_accuracy"] == pytest.approx(
                skm.balanced_accuracy_score(y, pred)
            )
            assert res.metrics[f"{pre}macro_f1"] == pytest.approx(
                skm.f1_score(y, pred, average="macro", zero_division=0)
            )
            mel = CLASS_TO_INDEX["mel"]
            if (y == mel).any():
                assert res.metrics[f"{pre}recall_mel"] == pytest.approx(
                    skm.recall_score(y == mel, pred == mel)
                )
            low, high = res.metrics[f"{pre}macro_f1_ci_low"], res.metrics[f"{pre}macro_f1_ci_high"]
            assert low <= res.metrics[f"{pre}macro_f1"] <= high
            n_checked += 1
    assert n_checked == len(res.table) == 6 + 3 + 4  # age: 5 bands + unknown
    # bands in age order, unknown last; the rare "acral" group is kept and flagged
    ages = res.table.loc[res.table["column"] == "age", "value"].tolist()
    assert ages == ["<30", "30-44", "45-59", "60-74", "75+", "unknown"]
    assert res.metrics["test/subgroup/localization=acral/small"] is True
    assert res.metrics["test/subgroup/localization=back/small"] is False


def test_missing_columns_are_listed_not_fatal():
    p, t, meta = make_problem(200)
    res = subgroup_metrics(p, t, meta.drop(columns=["sex"]), columns=("sex", "age"), n_resamples=50)
    assert res.missing_columns == ["sex"]
    assert not any("/sex=" in k for k in res.metrics)
    assert any(k.startswith("test/subgroup/age=") for k in res.metrics)


def test_align_metadata_and_its_errors():
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "sex": ["male", "female", "male"]})
    assert align_metadata(["c", "a"], frame)["sex"].tolist() == ["male", "male"]
    with pytest.raises(ValueError, match=r"no metadata row for 1 \(zz\)"):
        align_metadata(["a", "zz"], frame)
    with pytest.raises(ValueError, match=r"several rows for 1 \(a\)"):
        align_metadata(["a"], pd.concat([frame, frame.iloc[:1]]))
    p, t, meta = make_problem(50)
    with pytest.raises(ValueError, match="rows differ"):
        subgroup_metrics(p, t, meta.iloc[:10])
    with pytest.raises(KeyError, match="unknown subgroup metric"):
        subgroup_metrics(p, t, meta, columns=("sex",), metrics=("f2",), n_resamples=10)
