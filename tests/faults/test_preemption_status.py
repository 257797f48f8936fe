"""Fault 5: a preempted run says so. SIGUSR1/SIGTERM -> checkpoint at the step boundary -> exit
status 75 (not 0) and ``status.json`` ``preempted`` naming the checkpoint; the requeued SLURM job
(same command, same directory, same job id) continues by itself; the CSV log keeps the rows from
before the preemption; Lightning's "dataloader is not resumable" warning, untrue here, is replaced
by a line saying what was restored; ``dermlit sweep-summary`` does not count it as failed."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pandas as pd
import pytest

from dermlit.callbacks.preemption import Preempted
from dermlit.cli import main as cli_main
from dermlit.exit_codes import EXIT_PREEMPTED
from dermlit.run_lock import LOCK_FILE
from dermlit.status import read_status, recorded_status

from .conftest import BATCHES, TINY, dermlit, output

# SIGUSR1 at the start of step 4: epoch 1, its 2nd batch
SIGNAL = [
    "+callbacks.signal_at._target_=callbacks.test_preemption.SignalAtStep",
    "+callbacks.signal_at.step=4",
    f"+callbacks.signal_at.signum={int(signal.SIGUSR1)}",
]
NOT_RESUMABLE = "your dataloader is not resumable"


@pytest.fixture
def fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A 1-task SLURM job's variables and an ``scontrol`` that logs its arguments."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    exe = bin_dir / "scontrol"
    exe.write_text(f'#!/bin/sh\necho "scontrol $@" >> {calls}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_NTASKS": "1"}
    env |= {"SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242", "SLURM_PROCID": "0"}
    env |= {"SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    return env, calls


def test_preempted_run_exits_75_records_it_and_the_requeued_job_continues(
    tmp_path: Path, cache_dir: Path, fake_slurm
) -> None:
    env, calls = fake_slurm
    run = tmp_path / "run"
    args = [*TINY, "trainer.max_epochs=2", *SIGNAL, f"hydra.run.dir={run}"]
    first = dermlit("train", *args, cache=cache_dir, env=env)
    assert first.returncode == EXIT_PREEMPTED == 75, output(first)
    status = read_status(run)
    hpc = run / "hpc_ckpt_1.ckpt"
    assert status["state"] == "preempted" and status["checkpoint"] == str(hpc) and hpc.is_file()
    assert (status["epoch"], status["step"]) == (1, BATCHES + 2)
    assert status["resume"] == f"dermlit-train resume={run.resolve()}"
    assert status["slurm_job_id"] == "4242" and status["updated"]
    assert calls.read_text().splitlines() == ["scontrol requeue 4242"]
    assert not (run / LOCK_FILE).exists() and not (run / "metrics.json").exists()
    epoch0 = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["val/macro_f1"])

    # the requeued job: the same command in the same directory, ckpt_path=null
    second = dermlit("train", *args[:-4], f"hydra.run.dir={run}", cache=cache_dir, env=env)
    assert second.returncode == 0, output(second)
    assert read_status(run)["state"] == "completed"
    assert read_status(run)["resumed_from"] == str(hpc)
    assert "Resuming epoch 1 after 2 batches" in second.stderr + second.stdout
    assert NOT_RESUMABLE not in second.stderr + second.stdout
    logged = pd.read_csv(run / "csv" / "metrics.csv")
    val = logged.dropna(subset=["val/macro_f1"])
    assert val["epoch"].astype(int).tolist() == [0, 1]  # epoch 0's row survived the resume
    assert val["val/macro_f1"].iloc[0] == epoch0["val/macro_f1"].iloc[0]
    assert (run / "metrics.json").is_file()


def test_status_records_failure_and_preemption(tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError), recorded_status(tmp_path):
        assert read_status(tmp_path)["state"] == "running"
        raise FloatingPointError("non-finite training loss")
    failed = read_status(tmp_path)
    assert failed["state"] == "failed"
    assert failed["error"] == "FloatingPointError: non-finite training loss"
    with pytest.raises(Preempted) as stop, recorded_status(tmp_path / "p"):
        raise Preempted(checkpoint=str(tmp_path / "p" / "hpc_ckpt_3.ckpt"))
    assert stop.value.code == 75
    assert read_status(tmp_path / "p")["checkpoint"].endswith("hpc_ckpt_3.ckpt")


def job(sweep: Path, num: int, seed: int, metrics: dict | None = None) -> Path:
    path = sweep / str(num)
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(json.dumps(["loss=ce", f"seed={seed}"]))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_sweep_summary_lists_a_preempted_job_as_unfinished_not_failed(
    tmp_path: Path, capsys
) -> None:
    sweep = tmp_path / "sweep"
    done = {"test/macro_f1": 0.5, "test/balanced_accuracy": 0.5, "test/ece": 0.1}
    with recorded_status(job(sweep, 0, 0, done)):
        pass
    preempted = job(sweep, 1, 1)
    with pytest.raises(Preempted), recorded_status(preempted):
        raise Preempted(checkpoint=str(preempted / "hpc_ckpt_1.ckpt"))
    (preempted / "error.log").write_text("RuntimeError: an earlier attempt\n")  # then resumed
    crashed = job(sweep, 2, 2)
    with pytest.raises(RuntimeError), recorded_status(crashed):
        raise RuntimeError("CUDA error: out of memory")
    killed = job(sweep, 3, 3)
    (killed / "status.json").write_text(
        json.dumps({"state": "running", "pid": dead_pid(), "host": os.uname().nodename})
    )
    assert cli_main(["sweep-summary", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "## Failed jobs: 2 of 4" in out
    assert "`2` `loss=ce` seed=2: RuntimeError: CUDA error: out of memory" in out
    assert "`3` `loss=ce` seed=3: status.json says running, but its process" in out
    assert "## Unfinished jobs (preempted or running): 1 of 4" in out
    assert "`1` `loss=ce` seed=1: preempted at epoch None, step None" in out
    assert f"continue with `dermlit-train resume={preempted}`" in out
    assert "| `loss=ce` | 1 | 2 | 1 |" in out
    jobs = pd.read_csv(sweep / "summary" / "jobs.csv")
    assert jobs["status"].tolist() == ["ok", "preempted", "failed", "failed"]
    assert "2 of 4 jobs failed" in err and "1 of 4 jobs are unfinished" in err


def dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
