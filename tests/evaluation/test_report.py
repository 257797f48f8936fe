"""One split's clinical analysis and its report (md, self-contained html, PNGs, loggers)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import confusion_matrix, log_loss

from dermlit.constants import CLASS_TO_INDEX, CLASSES, MALIGNANT
from dermlit.evaluation.analysis import analyse
from dermlit.evaluation.report import log_report_to_loggers, write_report
from dermlit.evaluation.settings import CostMatrix, EvalSettings, load_cost

K = len(CLASSES)
PRIOR = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])


def logits_for(n: int, seed: int, sharpness: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Informative but deliberately overconfident logits (scaled up) with HAM-like classes."""
    rng = np.random.default_rng(seed)
    t = rng.choice(K, n, p=PRIOR)
    z = rng.normal(size=(n, K))
    z[np.arange(n), t] += 1.5
    return z * sharpness, t


FAST = EvalSettings.defaults(n_resamples=100)


@pytest.fixture(scope="module")
def analysed():
    z, t = logits_for(500, 0)
    val = logits_for(400, 1)
    return z, t, val, analyse(softmax(z, 1), t, "test", FAST, logits=z, val=val)


def test_temperature_scaling_before_and_after(analysed) -> None:
    z, t, (vz, vt), a = analysed
    m = a.metrics
    temp = m["test/temperature"]
    assert temp > 1.5  # the logits were scaled up 4x: scaling must soften them
    # T minimises the validation NLL (sklearn's log_loss as the oracle)
    val_nll = [
        log_loss(vt, softmax(vz / x, 1), labels=range(K)) for x in (temp / 1.1, temp, temp * 1.1)
    ]
    assert val_nll[1] < min(val_nll[0], val_nll[2])
    assert m["test/nll_ts"] == pytest.approx(log_loss(t, softmax(z / temp, 1), labels=range(K)))
    assert m["test/nll"] == pytest.approx(log_loss(t, softmax(z, 1), labels=range(K)))
    assert m["test/nll_ts"] < m["test/nll"] and m["test/ece_ts"] < m["test/ece"]
    for name in ("ece", "mce", "classwise_ece", "brier", "nll"):
        for key in (f"test/{name}", f"test/{name}_ts"):
            if m.get(f"{key}_ci_biased"):  # no valid interval: none is reported (intervals.py)
                assert math.isnan(m[f"{key}_ci_low"]) and math.isnan(m[f"{key}_ci_high"]), key
                continue
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], key
    # the 4x over-confident logits: a clear ECE with an interval; MCE never has one
    assert m["test/ece_ci_method"] == "bca" and not m.get("test/ece_ci_biased")
    assert m["test/mce_ci_biased"] and m["test/mce_ci_method"] == "none"
    assert m["test/nll_ts_ci_method"] == "percentile" and m["test/nll_ts_ci_low"] < m["test/nll_ts"]


def test_confusion_and_rare_called_common_against_sklearn(analysed) -> None:
    z, t, _, a = analysed
    pred = z.argmax(1)
    np.testing.assert_array_equal(a.confusion, confusion_matrix(t, pred, labels=range(K)))
    nv = CLASS_TO_INDEX["nv"]
    rare = t != nv
    assert a.metrics["test/rare_called_common_rate"] == pytest.approx(np.mean(pred[rare] == nv))
    assert a.highlight[:, nv].sum() == K - 1 and not a.highlight[nv].any()


def test_decisions_by_hand(analysed) -> None:
    z, t, (vz, vt), a = analysed
    m, cost = a.metrics, a.settings.cost.matrix
    pred = z.argmax(1)
    assert m["test/argmax_mean_cost"] == pytest.approx(cost[t, pred].mean())
    calibrated = softmax(z / m["test/temperature"], 1)
    bayes = (calibrated @ cost).argmin(1)
    assert m["test/bayes_mean_cost"] == pytest.approx(cost[t, bayes].mean())
    mal = np.isin(np.array(CLASSES), MALIGNANT)
    assert m["test/bayes_malignant_recall"] == pytest.approx(mal[bayes][mal[t]].mean())
    assert m["test/bayes_benign_referral_rate"] == pytest.approx(mal[bayes][~mal[t]].mean())
    # the clinical matrix makes missing a malignancy expensive: Bayes refers more, misses fewer
    assert m["test/bayes_malignant_recall"] >= m["test/argmax_malignant_recall"]
    assert m["test/bayes_mean_cost"] <= m["test/argmax_mean_cost"]
    # under 0-1 costs Bayes is the argmax and the mean cost the error rate
    uniform = analyse(
        softmax(z, 1), t, "test", EvalSettings.defaults(cost=load_cost("uniform"), n_resamples=10)
    ).metrics
    assert uniform["test/bayes_mean_cost"] == pytest.approx(1 - np.mean(pred == t))
    assert uniform["test/argmax_mean_cost"] == uniform["test/bayes_mean_cost"]


def test_referral_coverage_meets_the_target(analysed) -> None:
    z, t, _, a = analysed
    cov = a.metrics["test/referral_confidence_coverage_for_macro_f1"]
    thr = a.metrics["test/referral_confidence_threshold_for_macro_f1"]
    p = softmax(z / a.metrics["test/temperature"], 1)
    accepted = p.max(1) >= thr
    assert accepted.mean() == pytest.approx(cov)
    from sklearn.metrics import f1_score

    f1 = f1_score(t[accepted], p[accepted].argmax(1), average="macro")
    assert f1 >= a.settings.referral_targets["macro_f1"]


def test_without_validation_or_labels() -> None:
    z, t = logits_for(200, 3)
    a = analyse(softmax(z, 1), t, "test", FAST)
    assert "test/temperature" not in a.metrics and "test/ece_ts" not in a.metrics
    assert any("temperature scaling skipped" in n for n in a.notes)
    b = analyse(softmax(z, 1), np.full(200, -1), "ext", FAST)
    assert b.metrics == {"ext/n_images": 200} and "No labels" in b.notes[0]


def test_cost_config_is_reordered_and_checked() -> None:
    clinical = load_cost("clinical")
    mel, nv = CLASS_TO_INDEX["mel"], CLASS_TO_INDEX["nv"]
    assert clinical.matrix[mel, nv] > 10 * clinical.matrix[nv, mel]  # missed melanoma costs most
    rev = list(reversed(CLASSES))
    node = {"name": "r", "classes": rev, "matrix": clinical.matrix[::-1, ::-1].tolist()}
    np.testing.assert_array_equal(CostMatrix.from_config(node).matrix, clinical.matrix)
    with pytest.raises(ValueError, match="permutation"):
        CostMatrix.from_config({"classes": ["mel"], "matrix": [[0]]})
    with pytest.raises(ValueError, match="zero diagonal"):
        CostMatrix.from_config({"classes": CLASSES, "matrix": np.ones((K, K)).tolist()})
    with pytest.raises(FileNotFoundError, match="known: .*clinical"):
        load_cost("nope")


def test_report_files_and_self_contained_html(analysed, tmp_path: Path) -> None:
    *_, a = analysed
    r = write_report(a, tmp_path / "report")
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == sorted(
        f"{s}.png"
        for s in (
            "confusion_matrix",
            "reliability",
            "reliability_per_class",
            "recall_per_class",
            "risk_coverage",
            "roc_mel",
        )
    )
    md = r.markdown_path.read_text()
    for name in pngs:
        assert f"]({name})" in md
    assert "| test/macro_f1 |" in md and f"T = {a.metrics['test/temperature']:.3f}" in md
    html = r.html_path.read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == len(pngs) and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert "<link" not in html and "<script" not in html
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {(tmp_path / "report" / n).read_bytes() for n in pngs}
    # highlighted confusion cells: nonzero rare-called-common cells, in both confusion tables
    hot = int((a.highlight & (a.confusion > 0)).sum())
    assert hot > 0 and html.count('class="hot"') == 2 * hot


def test_figures_off_writes_the_same_tables_and_says_so(analysed, tmp_path: Path) -> None:
    """evaluation.figures=false: no PNG, one line saying so, and otherwise the same report."""
    *_, a = analysed
    on = write_report(a, tmp_path / "on").markdown_path.read_text()
    off_analysis = dataclasses.replace(a, settings=dataclasses.replace(a.settings, figures=False))
    r = write_report(off_analysis, tmp_path / "off")
    assert not list((tmp_path / "off").glob("*.png")) and r.images == {}
    off = r.markdown_path.read_text()
    note = "Figures: off (evaluation.figures=false); the tables below are complete."
    assert off.count(note) == 1 and "![" not in off

    def content(md: str) -> list[str]:  # blocks are separated by blank lines
        return [line for line in md.splitlines() if line and not line.startswith("![")]

    assert [line for line in content(off) if line != note] == content(on)


def test_report_logged_to_wandb_offline(analysed, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    *_, a = analysed
    r = write_report(a, tmp_path / "report")
    logger = WandbLogger(project="dermlit-test", save_dir=str(tmp_path), offline=True)
    log_report_to_loggers([CSVLogger(tmp_path), logger], r)
    import wandb

    wandb.finish()
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    media = run_dir / "files" / "media"
    images = list((media / "images").rglob("*.png"))
    assert len(images) == len(r.images)
    tables = list((media / "table").rglob("*.table.json"))
    assert len(tables) == len(r.tables)
    per_class = next(t for t in tables if "per_class" in str(t))
    data = json.loads(per_class.read_text())
    assert [row[0] for row in data["data"]] == list(CLASSES)


def test_evaluation_settings_have_one_source_the_config_group() -> None:
    """conf/evaluation/default.yaml instantiates EvalSettings; the defaults outside Hydra are
    the same file composed, and bad values are refused by name."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from dermlit.config import compose_config

    cfg = compose_config("eval", ["bootstrap_resamples=7", "evaluation/cost=uniform", "seed=3"])
    s = instantiate(cfg.evaluation)
    assert (s.n_resamples, s.seed, s.cost.name) == (7, 3, "uniform")
    np.testing.assert_array_equal(s.cost.matrix, 1 - np.eye(K))
    defaults = EvalSettings.defaults()
    assert defaults.common_classes == ("nv",) and defaults.cost.name == "clinical"
    assert (defaults.n_resamples, defaults.alpha, defaults.n_bins) == (1000, 0.05, 15)
    assert defaults.referral_targets == {"macro_f1": 0.8, "mel_recall": 0.9}
    # an older run's resolved evaluation node (no _target_, no n_resamples/seed)
    old = {k: v for k, v in cfg.evaluation.items() if k not in ("_target_", "n_resamples", "seed")}
    again = EvalSettings.from_config(old, 7, 3)
    np.testing.assert_array_equal(again.cost.matrix, s.cost.matrix)
    assert dataclasses.replace(again, cost=s.cost) == s
    with pytest.raises(InstantiationException, match=r"unknown common_classes \['nevus'\]"):
        compose = compose_config("eval", ["evaluation.common_classes=[nevus]"])
        instantiate(compose.evaluation)
