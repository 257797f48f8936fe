"""The recipe-search driver (benchmarks/recipe_search.py): its candidates compose, and its table
reads the archived run as a hand-made example says."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dermlit.config import compose_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import recipe_search  # noqa: E402


@pytest.mark.parametrize("name", sorted(recipe_search.CANDIDATES))
def test_every_candidate_composes_to_what_its_name_says(name: str) -> None:
    cfg = compose_config("train", recipe_search.CANDIDATES[name])
    for pattern, value in (
        (r"_(\d+)ep$", cfg.trainer.max_epochs),
        (r"_(\d+)px_", cfg.data.image_size),
    ):
        if found := re.search(pattern, name):
            assert int(found.group(1)) == value
    if found := re.match(r"loso_(rosendahl|vidir_modern)", name):
        assert list(cfg.data.split.test_sources) == [found.group(1)]
        assert cfg.data.split._target_ == "dermlit.data.source_split.SourceHoldout"


def test_row_reads_the_best_ema_epoch_and_the_intervals(tmp_path: Path, monkeypatch) -> None:
    name = "n1_64px_54ep"
    dest = tmp_path / name
    (dest / "csv").mkdir(parents=True)
    # raw-weight scores are higher, but the EMA's were tested: the row must report the EMA's
    pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1, 2],
            "val/macro_f1": [0.9, None, 0.95, None, None],
            "val_ema/macro_f1": [0.30, None, 0.45, None, None],
            "train/loss_epoch": [None, 1.0, None, 0.8, 0.7],
        }
    ).to_csv(dest / "csv" / "metrics.csv", index=False)
    metrics = {"val/macro_f1": 0.5, "val/balanced_accuracy": 0.61, "val/recall_mel": 0.48}
    for key, (value, low, high) in {
        "macro_f1": (0.6, 0.55, 0.65),
        "balanced_accuracy": (0.62, 0.57, 0.67),
        "recall_mel": (0.7, 0.6, 0.8),
        "ece": (0.03, 0.02, 0.05),
    }.items():
        metrics |= {f"test/{key}": value, f"test/{key}_ci_low": low, f"test/{key}_ci_high": high}
    (dest / "metrics.json").write_text(json.dumps(metrics))
    (dest / "time.json").write_text(json.dumps({"wall_s": 1710.0}))
    monkeypatch.setattr(recipe_search, "RESULTS", tmp_path)
    cells = [c.strip() for c in recipe_search.row(name).strip("|").split("|")]
    assert cells[2] == "0.450 (epoch 1)"
    assert cells[3:6] == ["0.500", "0.610", "0.480"]
    assert cells[6] == "0.600 [0.550, 0.650]"
    assert cells[9] == "0.030 [0.020, 0.050]"
    assert cells[10:] == ["28.5 min", "54"]
    assert recipe_search.row("n2_96px_36ep") is None  # not run: no row
    assert recipe_search.row(name, "no_bias") is None  # not re-evaluated: no row
    # a re-evaluation: its own metrics, the run's best epoch and time, its own overrides
    (dest / "decision_no_bias").mkdir()
    (dest / "decision_no_bias" / "metrics.json").write_text(
        json.dumps({**metrics, "test/macro_f1": 0.55, "val/recall_mel": 0.7})
    )
    cells = [c.strip() for c in recipe_search.row(name, "no_bias").strip("|").split("|")]
    assert cells[:3] == [f"`{name}` + no_bias", "`posthoc=none`", "0.450 (epoch 1)"]
    assert cells[5] == "0.700" and cells[6] == "0.550 [0.550, 0.650]"
    assert cells[10:] == ["28.5 min", "54"]


def test_the_floors_decision_keeps_the_old_recipes_validation_scores() -> None:
    old = json.loads((recipe_search.RESULTS / "c3_old_recipe" / "metrics.json").read_text())
    for key, floor in recipe_search.OLD_VAL_FLOORS.items():
        assert old[f"val/{key}"] - 0.001 < floor <= old[f"val/{key}"]
    cfg = compose_config("eval", ["run_dir=x", *recipe_search.DECISIONS["bias_macro_f1_floors"]])
    rule = instantiate(cfg.posthoc)
    assert rule.floors == recipe_search.OLD_VAL_FLOORS and rule.objective == "macro_f1"


def test_decisions_other_than_no_bias_come_from_the_archived_predictions(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(recipe_search, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(recipe_search, "RUNS", tmp_path / "runs")
    (tmp_path / "runs" / "n1_64px_54ep" / "checkpoints").mkdir(parents=True)
    seen = []
    monkeypatch.setattr(
        recipe_search.study_runs, "run_and_archive", lambda repo, cmd, **kw: seen.append(cmd)
    )
    recipe_search.eval_one("n1_64px_54ep", "no_bias")
    assert f"run_dir={tmp_path / 'runs' / 'n1_64px_54ep'}" in seen[-1]
    # no archived no_bias predictions yet: refused with what it needs, nothing run
    assert not recipe_search.eval_one("n1_64px_54ep", "bias_macro_f1")
    assert len(seen) == 1
    archived = tmp_path / "results" / "n1_64px_54ep" / "decision_no_bias"
    archived.mkdir(parents=True)
    (archived / "val_predictions.csv").write_text("")
    (tmp_path / "results" / "n1_64px_54ep" / ".hydra").mkdir()
    resolved = {"data": {"source": {"root": "/data/ham"}}}
    (tmp_path / "results" / "n1_64px_54ep" / ".hydra" / "resolved.yaml").write_text(
        json.dumps(resolved)
    )
    recipe_search.eval_one("n1_64px_54ep", "bias_macro_f1")
    assert f"predictions={archived}/predictions.csv" in seen[-1]
    # the per-source metrics need the data's source column, joined from its metadata
    assert "metadata.csv=/data/ham/HAM10000_metadata.csv" in seen[-1]
    assert "metadata.source_column=dataset" in seen[-1]
    assert f"val_predictions={archived}/val_predictions.csv" in seen[-1]
    assert not any(arg.startswith("run_dir=") for arg in seen[-1])


@pytest.mark.parametrize(
    "name",
    [n for n in sorted(recipe_search.CANDIDATES) if (recipe_search.RESULTS / n).is_dir()],
)
def test_every_archived_candidate_still_composes_to_what_it_ran(name: str) -> None:
    """The candidates build on the recipe file, which changed after they ran: their overrides
    must still give the archived run's settings."""
    ran = yaml.safe_load((recipe_search.RESULTS / name / ".hydra" / "resolved.yaml").read_text())
    cfg = compose_config("train", recipe_search.CANDIDATES[name])

    def now(path: str):
        value = OmegaConf.select(cfg, path)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    for section, keys in {
        "posthoc": None,
        "data": ("image_size", "batch_size"),
        "trainer": ("max_epochs", "precision"),
        "optim": ("optimizer",),
        "loss": None,
        "tta": None,
    }.items():
        if keys:
            then = {k: ran[section][k] for k in keys}
            today = {k: now(f"{section}.{k}") for k in keys}
        else:
            then, today = ran[section], now(section)
        if section == "posthoc" and today.get("floors") is None and "floors" not in then:
            today.pop("floors", None)  # the archived run is older than posthoc.floors
        assert today == then, section
