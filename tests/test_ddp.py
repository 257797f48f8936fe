"""DDP through the real entry point on 2 CPU processes (gloo): single runs and multiruns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.source.n_images=700", "data.image_size=32", "data.batch_size=32"]
FAST = [*TINY, "trainer=ddp_cpu", "trainer.max_epochs=1", "+trainer.limit_train_batches=3"]
FAST += ["bootstrap_resamples=50", "model.backbone.name=resnet10t"]

pytestmark = pytest.mark.slow


def run(args: list[str], cache: Path, module: str = "dermlit.train") -> subprocess.CompletedProcess:
    env = {**os.environ, "DERMLIT_CACHE": str(cache), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def test_ddp_run_equals_single_process_evaluation(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ddp = tmp_path / "ddp"
    run([*FAST, f"hydra.run.dir={ddp}"], cache)
    ckpts = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert ckpts == ["best-epoch00.ckpt", "last.ckpt"], ckpts  # written once, by rank 0
    # the same checkpoint evaluated by ONE process gives the same predictions, sample for sample
    run([f"run_dir={ddp}", "checkpoint=best", "bootstrap_resamples=50"], cache, "dermlit.evaluate")
    single = ddp / "eval" / "test-best"
    a = pd.read_csv(ddp / "predictions.csv")
    b = pd.read_csv(single / "predictions.csv")
    assert len(a) == len(pd.read_csv(ddp / "splits.csv").query("split == 'test'"))
    assert a["image"].tolist() == b["image"].tolist()
    pd.testing.assert_frame_equal(a, b, atol=1e-5, check_exact=False)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ddp, single))
    for key in ("test/macro_f1", "test/balanced_accuracy", "test/accuracy", "test/recall_mel"):
        assert ma[key] == pytest.approx(mb[key], abs=1e-9)


def test_ddp_under_a_multirun_keeps_each_job_in_its_directory(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run(["-m", *FAST, "loss=ce,focal", f"hydra.sweep.dir={sweep}"], tmp_path / "cache")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"], jobs  # no nested sweep started by a child rank
    for job, loss in zip(jobs, ("ce", "focal"), strict=True):
        d = sweep / job
        for name in ("metrics.json", "predictions.csv", "splits.csv", "report/report.md"):
            assert (d / name).is_file(), f"{d / name} missing"
        assert f"loss={loss}" in (d / ".hydra" / "overrides.yaml").read_text()
        assert not any(p.is_dir() and p.name.isdigit() for p in d.iterdir())
