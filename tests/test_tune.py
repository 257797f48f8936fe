"""``hydra/sweeper=tune``: Optuna runs trials of the real entry point and maximises the best
validation macro-F1 each trial returns (slow: two short trainings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.source.n_images=700", "data.image_size=32", "data.batch_size=32"]

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper missing")


@pytest.mark.slow
def test_optuna_runs_two_trials_on_validation_macro_f1(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "DERMLIT_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "dermlit.train", "-m", "hydra/sweeper=tune"]
    cmd += ["hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", *TINY]
    cmd += ["trainer.max_epochs=2", "+trainer.limit_train_batches=3", "bootstrap_resamples=20"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    # each trial's objective: its best val/macro_f1 over the epochs, from its own CSV log
    best = []
    for job in jobs:
        assert (job / "metrics.json").is_file()
        logged = pd.read_csv(job / "csv" / "metrics.csv")
        best.append(logged["val/macro_f1"].max())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(best), abs=1e-6)
    # the sampled parameters come from the search space
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o for o in overrides if o.startswith("optim.optimizer.lr=")).split("=")[1])
        assert 1e-4 <= lr <= 3e-3
        assert any(
            o.split("=")[1] in ("ce", "focal", "logit_adjusted")
            for o in overrides
            if o.startswith("loss=")
        )
