"""The run writer's conformal and subgroup keys and report sections, checked against a
by-hand conformal fit and scikit-learn on each subgroup."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.metrics import f1_score

from dermlit.constants import CLASSES
from dermlit.evaluation.settings import EvalSettings
from dermlit.rundir import SplitOutputs, write_evaluation

K = len(CLASSES)


def outputs(n: int, seed: int, with_metadata: bool = True) -> SplitOutputs:
    rng = np.random.default_rng(seed)
    targets = rng.choice(K, size=n, p=[0.05, 0.08, 0.12, 0.04, 0.12, 0.55, 0.04])
    logits = rng.normal(0, 1.0, (n, K))
    logits[np.arange(n), targets] += 2.0
    meta = None
    if with_metadata:
        meta = pd.DataFrame(
            {
                "image_id": [f"I{seed}_{i}" for i in range(n)],
                "age": rng.choice([15.0, 35.0, 50.0, 65.0, 80.0, np.nan], size=n),
                "sex": rng.choice(["male", "female", "unknown"], size=n, p=[0.5, 0.45, 0.05]),
                "localization": rng.choice(["back", "face", "ear"], size=n, p=[0.6, 0.37, 0.03]),
            }
        )
    ids = [f"I{seed}_{i}" for i in range(n)]
    return SplitOutputs(ids, logits, targets, meta)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict, SplitOutputs, SplitOutputs]:
    out = tmp_path_factory.mktemp("conformal-eval")
    test, val = outputs(600, 1), outputs(500, 2, with_metadata=False)
    settings = EvalSettings.defaults(n_resamples=100, seed=0)
    write_evaluation(out, test, val=val, settings=settings)
    return out, json.loads((out / "metrics.json").read_text()), test, val


def by_hand_sets(val: SplitOutputs, test: SplitOutputs, temperature: float, alpha: float):
    vp = softmax(val.logits / temperature, axis=1)
    tp = softmax(test.logits / temperature, axis=1)
    q = np.full(K, np.inf)
    for c in range(K):
        scores = np.sort(1 - vp[val.targets == c, c])
        k = math.ceil((len(scores) + 1) * (1 - alpha) - 1e-9)
        if k <= len(scores):
            q[c] = scores[k - 1]
    return (1 - tp) <= q


def test_conformal_keys_equal_a_by_hand_fit(written) -> None:
    _, metrics, test, val = written
    sets = by_hand_sets(val, test, metrics["test/temperature"], 0.1)
    t = test.targets
    covered = sets[np.arange(len(t)), t]
    assert metrics["test/conformal_coverage"] == pytest.approx(covered.mean())
    assert metrics["test/conformal_set_size"] == pytest.approx(sets.sum(1).mean())
    for c, name in enumerate(CLASSES):
        key = f"test/conformal_coverage_{name}"
        assert metrics[key] == pytest.approx(covered[t == c].mean()), name
        assert metrics[f"test/conformal_set_size_{name}"] == pytest.approx(
            sets[t == c].sum(1).mean()
        )
        assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"]
    assert metrics["conformal/alpha"] == 0.1


def test_subgroup_keys_equal_scikit_learn_per_group(written) -> None:
    _, metrics, test, _ = written
    meta, t = test.metadata, test.targets
    pred = test.logits.argmax(1)
    for column, value, member in (
        ("sex", "male", meta["sex"] == "male"),
        ("sex", "unknown", meta["sex"] == "unknown"),
        ("localization", "face", meta["localization"] == "face"),
        ("age", "60-74", meta["age"] == 65.0),
        ("age", "unknown", meta["age"].isna()),
    ):
        m = member.to_numpy()
        prefix = f"test/subgroup/{column}={value}/"
        labels = sorted(set(t[m]) | set(pred[m]))
        assert metrics[f"{prefix}macro_f1"] == pytest.approx(
            f1_score(t[m], pred[m], average="macro", labels=labels), abs=1e-9
        )
        assert metrics[f"{prefix}n_images"] == int(m.sum())
        assert metrics[f"{prefix}small"] == (m.sum() < 30)
    assert metrics["test/subgroup/localization=ear/small"] is True


def test_report_shows_coverage_set_sizes_and_flagged_subgroups(written) -> None:
    out, metrics, _, _ = written
    md = (out / "report" / "report.md").read_text()
    assert "## Conformal prediction sets" in md and "set-size distribution" in md
    assert "## Subgroups" in md and "small (< 30)" in md
    html = (out / "report" / "report.html").read_text()
    assert "coverage and mean set size per true class" in html
    assert f"{metrics['test/conformal_coverage_nv']:.3f}" in md
    assert "| localization | ear |" in md


def test_without_metadata_or_validation_no_new_keys(tmp_path: Path) -> None:
    test = outputs(300, 3, with_metadata=False)
    write_evaluation(tmp_path, test, settings=EvalSettings.defaults(n_resamples=50))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert not [k for k in metrics if "conformal" in k or "/subgroup/" in k]
    assert (
        "No validation predictions: no conformal sets"
        in (tmp_path / "report" / "report.md").read_text()
    )


def test_evaluating_the_validation_images_says_the_numbers_are_in_sample(tmp_path: Path) -> None:
    """``dermlit-eval split=val`` fits the temperature and the conformal thresholds on the very
    images it scores: the coverage is then ceil((n_c + 1)(1 - alpha)) / n_c by construction
    (checked here by hand), so the report must say the numbers are in-sample."""
    val = outputs(400, 4, with_metadata=False)
    settings = EvalSettings.defaults(n_resamples=50, seed=0)
    write_evaluation(tmp_path, val, "val", val=val, settings=settings)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val/fitted_in_sample"] == 400
    alpha = settings.conformal_alpha
    for c, name in enumerate(CLASSES):
        n_c = int((val.targets == c).sum())
        rank = math.ceil((n_c + 1) * (1 - alpha) - 1e-9)
        if rank <= n_c:  # the in-sample coverage is exactly the conformal rank
            assert metrics[f"val/conformal_coverage_{name}"] == pytest.approx(rank / n_c)
    md = " ".join((tmp_path / "report" / "report.md").read_text().split())
    assert "In-sample: 400 of these 400 val images" in md


def test_held_out_evaluation_is_not_flagged_in_sample(written) -> None:
    out, metrics, _, _ = written
    assert "test/fitted_in_sample" not in metrics
    assert "In-sample" not in (out / "report" / "report.md").read_text()


def test_unlabelled_validation_predictions_skip_the_calibration(tmp_path: Path) -> None:
    """It crashed in the temperature fit ('probs and targets are empty') for a
    val_predictions.csv without labels, instead of skipping what needs them."""
    test, val = outputs(300, 5, with_metadata=False), outputs(200, 6, with_metadata=False)
    val = SplitOutputs(val.image_ids, val.logits, np.full(200, -1), None)
    write_evaluation(tmp_path, test, val=val, settings=EvalSettings.defaults(n_resamples=50))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/temperature" not in metrics and not [k for k in metrics if "conformal" in k]
    assert metrics["test/macro_f1"] == pytest.approx(
        f1_score(test.targets, test.logits.argmax(1), average="macro", labels=range(K))
    )
    md = " ".join((tmp_path / "report" / "report.md").read_text().split())
    assert "The validation predictions have no labels" in md
