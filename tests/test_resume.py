"""``dermlit-train resume=RUN_DIR``: the command-line rewrite, and (slow) a real preemption of
the entry point resumed in place, ending with the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from dermlit.resume import (
    ResumeError,
    expand_resume_argv,
    newest_checkpoint,
    resume_overrides,
    wandb_run_id,
)

REPO = Path(__file__).resolve().parents[1]


def make_run(root: Path, overrides: list[str], logger: dict | None = None) -> Path:
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (root / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": logger or {}}))
    (root / "checkpoints").mkdir()
    return root


def touch(path: Path, mtime: float) -> Path:
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_expands_to_the_stored_overrides_the_run_dir_and_the_newest_checkpoint(tmp_path) -> None:
    run = make_run(tmp_path / "run", ["loss=focal", "trainer.max_epochs=5", "ckpt_path=/old"])
    touch(run / "checkpoints" / "last.ckpt", 1000)
    hpc = touch(run / "hpc_ckpt_2.ckpt", 2000)
    argv = expand_resume_argv(["dermlit-train", f"resume={run}", "trainer.max_epochs=9"])
    assert argv == [
        "dermlit-train",
        "loss=focal",  # stored
        "trainer.max_epochs=9",  # the user's new value replaces the stored one
        f"hydra.run.dir={run.resolve()}",
        f"resume={run.resolve()}",
        f"ckpt_path={hpc}",  # newer than last.ckpt; the stored ckpt_path is dropped
    ]
    # an already expanded command (a DDP child) is left as it is
    assert expand_resume_argv(argv) == argv
    # last.ckpt when it is the newer one; an explicit ckpt_path wins
    touch(run / "checkpoints" / "last.ckpt", 3000)
    assert newest_checkpoint(run) == run / "checkpoints" / "last.ckpt"
    out = resume_overrides(run, ["ckpt_path=/mine.ckpt"])
    assert [o for o in out if o.startswith("ckpt_path=")] == ["ckpt_path=/mine.ckpt"]
    # resume=null and no resume: unchanged
    assert expand_resume_argv(["x", "resume=null", "a=1"]) == ["x", "resume=null", "a=1"]


def test_wandb_run_is_resumed_by_id(tmp_path) -> None:
    run = make_run(tmp_path / "run", ["logger=wandb"], logger={"wandb": {"project": "p"}})
    touch(run / "checkpoints" / "last.ckpt", 1000)
    (run / "wandb" / "offline-run-20250101_120000-ab12cd34").mkdir(parents=True)
    (run / "wandb" / "latest-run").symlink_to("offline-run-20250101_120000-ab12cd34")
    assert wandb_run_id(run) == "ab12cd34"
    out = resume_overrides(run)
    assert out[-2:] == ["++logger.wandb.id=ab12cd34", "++logger.wandb.resume=allow"]
    # no W&B logger in the run: no W&B keys
    other = make_run(tmp_path / "csv", [])
    touch(other / "checkpoints" / "last.ckpt", 1000)
    assert not any("logger.wandb" in o for o in resume_overrides(other))


def test_refuses_what_cannot_be_resumed(tmp_path) -> None:
    with pytest.raises(ResumeError, match="expected a dermlit-train run directory"):
        expand_resume_argv(["x", f"resume={tmp_path}"])
    run = make_run(tmp_path / "run", [])
    with pytest.raises(ResumeError, match="no checkpoint to resume from"):
        expand_resume_argv(["x", f"resume={run}"])
    touch(run / "checkpoints" / "last.ckpt", 1000)
    with pytest.raises(ResumeError, match="cannot be combined with -m"):
        expand_resume_argv(["x", "-m", f"resume={run}"])
    with pytest.raises(ResumeError, match="drop hydra.run.dir"):
        expand_resume_argv(["x", f"resume={run}", f"hydra.run.dir={tmp_path / 'elsewhere'}"])


def save_optimizer_checkpoint(path: Path, optimizer, steps: int = 2) -> Path:
    """A checkpoint's optimizer part as Lightning writes it, after ``steps`` epochs of the
    cosine (so that the current LR is not the configured one)."""
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    torch.save({"optimizer_states": [optimizer.state_dict()]}, path)
    return path


def adamw(lr: float = 1e-3, weight_decay: float = 0.05) -> torch.optim.Optimizer:
    """conf/optim/adamw.yaml's optimizer, on one parameter."""
    return torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr, weight_decay=weight_decay)


def test_a_changed_optimizer_setting_is_refused_before_anything_is_written(tmp_path) -> None:
    """Lightning restores the optimizer's param groups (its LR included) from the checkpoint:
    resume=RUN optim.optimizer.lr=1e-5 trained on at the old LR while .hydra/resolved.yaml
    said 1e-5. Refused before Hydra starts, naming the setting, the old and the new value."""
    run = make_run(tmp_path / "run", ["trainer.max_epochs=3"])
    save_optimizer_checkpoint(run / "checkpoints" / "last.ckpt", adamw())
    stored = (run / ".hydra" / "overrides.yaml").read_text()
    with pytest.raises(ResumeError) as refused:
        expand_resume_argv(
            ["x", f"resume={run}", "trainer.max_epochs=4", "optim.optimizer.lr=1e-5"]
        )
    message = str(refused.value)
    assert "\n" not in message
    assert "optim.optimizer.lr 0.001 -> 1e-05" in message
    assert "give optim.optimizer.lr=0.001" in message and "start a new run" in message
    assert (run / ".hydra" / "overrides.yaml").read_text() == stored
    # several settings, and another optimizer class, are named too
    with pytest.raises(ResumeError, match=r"weight_decay 0.05 -> 0.1\b"):
        expand_resume_argv(["x", f"resume={run}", "optim.optimizer.weight_decay=0.1"])
    # another optimizer class is named as such, not as settings to restate that it rejects
    with pytest.raises(ResumeError) as refused:
        expand_resume_argv(["x", f"resume={run}", "optim=sgd"])
    message = str(refused.value)
    assert "would change the optimizer to SGD" in message and "betas" in message
    assert "drop the optim= change" in message and "optim.optimizer.betas=" not in message
    # what a resume may change: the horizon (re-planned), an unchanged or restated LR
    for extra in ([], ["trainer.max_epochs=6"], ["optim.optimizer.lr=0.001"]):
        argv = expand_resume_argv(["x", f"resume={run}", *extra])
        assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in argv
    # a new run from the checkpoint restores the optimizer the same way
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(ResumeError, match=r"optim.optimizer.lr 0.001 -> 1e-05"):
        expand_resume_argv(["x", f"ckpt_path={ckpt}", "optim.optimizer.lr=1e-5"])
    argv = ["x", f"ckpt_path={ckpt}", "trainer.max_epochs=6"]
    assert expand_resume_argv(argv) == argv


def test_the_runs_own_optimizer_overrides_are_the_reference(tmp_path) -> None:
    """A run started with optim.optimizer.lr=0.01 resumes (its stored override composes the same
    optimizer); its checkpoint, not the config's default, says what the run trains at."""
    run = make_run(tmp_path / "run", ["optim.optimizer.lr=0.01"])
    save_optimizer_checkpoint(run / "checkpoints" / "last.ckpt", adamw(lr=0.01))
    expand_resume_argv(["x", f"resume={run}", "trainer.max_epochs=5"])
    with pytest.raises(ResumeError, match=r"optim.optimizer.lr 0.01 -> 0.001"):
        expand_resume_argv(["x", f"resume={run}", "optim.optimizer.lr=1e-3"])


# ---------------------------------------------------------------- the entry point (slow)
TINY = ["data.source.n_images=700", "data.image_size=32", "data.batch_size=32"]
SHORT = [
    *TINY,
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=6",
    "sampler=sqrt_frequency",
    "bootstrap_resamples=20",
]
# SIGUSR1 sent to the process itself at the start of step 8 (epoch 1, its 3rd batch)
SIGNAL = [
    "+callbacks.signal_at._target_=callbacks.test_preemption.SignalAtStep",
    "+callbacks.signal_at.step=8",
    f"+callbacks.signal_at.signum={int(signal.SIGUSR1)}",
]


def train(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DERMLIT_CACHE": str(cache), "WANDB_MODE": "offline"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "dermlit.train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_preempted_entry_point_resumes_in_place_with_the_same_weights(tmp_path) -> None:
    cache = tmp_path / "cache"
    whole = train(cache, *SHORT, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "run"
    started = time.time()
    first = train(cache, *SHORT, *SIGNAL, f"hydra.run.dir={run}")
    assert first.returncode == 75, first.stderr[-3000:]  # EXIT_PREEMPTED
    assert (run / "hpc_ckpt_1.ckpt").is_file() and not (run / "metrics.json").exists()
    assert torch.load(run / "hpc_ckpt_1.ckpt", weights_only=False)["global_step"] == 9

    second = train(cache, f"resume={run}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert (run / "metrics.json").stat().st_mtime > started
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert f"ckpt_path={run / 'hpc_ckpt_1.ckpt'}" in overrides
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 18
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=1e-5, msg=key)
