"""The fault-injection suite: ordinary paths that used to give a wrong or mixed-up result with
exit status 0. Runs go through the real entry point (``python -m dermlit.train``) on a tiny
synthetic set and timm's ``test_resnet``, a few batches per epoch (seconds of compute; most of a
run's time is importing torch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.source.n_images=700",
    "data.image_size=32",
    "data.batch_size=32",
    "model.backbone.name=test_resnet",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "bootstrap_resamples=20",
    "evaluation.figures=false",  # the report's figures: ~2.5 s a run, and no fault is in them
]
#: the monitored score gets worse every epoch (``epoch`` is always a monitor candidate in
#: Lightning; mode=min keeps epoch 0 best): a deterministic "validation score that falls".
#: save_top_k=2 keeps two best files, so sort order and the run's record disagree.
FALLING = [
    "callbacks.model_checkpoint.monitor=epoch",
    "callbacks.model_checkpoint.mode=min",
    "+callbacks.model_checkpoint.save_top_k=2",
]
BATCHES = 3  # per epoch (limit_train_batches)


def dermlit(
    module: str, *args: str, cache: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m dermlit.<module> ARGS``; tests/ is importable (SignalAtStep)."""
    full_env = {**os.environ, "DERMLIT_CACHE": str(cache), "WANDB_MODE": "offline", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(REPO / "tests"), full_env.get("PYTHONPATH", "")]
    )
    cmd = [sys.executable, "-m", f"dermlit.{module}", *args]
    return subprocess.run(
        cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-4000:] + proc.stderr[-6000:]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dermlit-cache")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, cache_dir: Path) -> Path:
    """A finished 3-epoch run whose monitored score falls (read-only: copy it to change it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = dermlit(
        "train", *TINY, *FALLING, "trainer.max_epochs=3", f"hydra.run.dir={run}", cache=cache_dir
    )
    assert proc.returncode == 0, output(proc)
    return run


@pytest.fixture
def copy_of_finished_run(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy
