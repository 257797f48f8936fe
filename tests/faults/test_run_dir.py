"""Fault 1: a run directory belongs to one run (dermlit/run_dir_guard.py, dermlit/run_lock.py).

Two runs started into one ``hydra.run.dir`` used to leave ``.hydra/`` of one, ``metrics.json`` of
the other and checkpoints of both. Now: refused (exit 2, one line naming the directory and what
to do) unless ``resume=`` or ``overwrite=true``; a live holder is refused by its PID; a stale
lock is taken over; DDP child ranks and a requeued SLURM job are let through."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dermlit.run_dir_guard import RunDirGuard, RunDirRefused
from dermlit.run_lock import LOCK_FILE, Holder, RunDirLock, RunDirLocked
from dermlit.status import write_status

from .conftest import TINY, dermlit, output


def config(run_dir: Path, **top) -> OmegaConf:
    """The parts of the composed config the guard reads."""
    hydra = {"run": {"dir": str(run_dir)}, "sweep": {"dir": str(run_dir)}}
    hydra["runtime"] = {"output_dir": str(run_dir)}
    return OmegaConf.create({"resume": None, "overwrite": False, **top, "hydra": hydra})


def fake_run(run: Path, extra: str | None = "notes.txt") -> Path:
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("[]")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "metrics.json").write_text("{}")
    (run / "train.log").write_text("old run\n")
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"")
    if extra:
        (run / extra).write_text("mine")
    return run


@pytest.fixture(autouse=True)
def single_process(monkeypatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(directory: Path, pid: int, host: str | None = None, job: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    holder = Holder(pid, host or Holder.me().host, job, "2026-01-01T00:00:00")
    (directory / LOCK_FILE).write_text(json.dumps(holder.__dict__))


# ------------------------------------------------------------------ through the entry point
def test_second_run_into_a_run_directory_is_refused_in_one_line(
    copy_of_finished_run: Path, cache_dir: Path
) -> None:
    run = copy_of_finished_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    proc = dermlit("train", *TINY, "seed=1", f"hydra.run.dir={run}", cache=cache_dir)
    assert proc.returncode == 2, output(proc)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith(f"dermlit-train: {run} already holds a run (.hydra, checkpoints")
    assert f"dermlit-train resume={run}" in lines[0] and "overwrite=true" in lines[0]
    # nothing of the first run was touched (Hydra writes .hydra/ before the task runs)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_a_directory_in_use_is_refused_naming_the_holder(tmp_path: Path, cache_dir: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(tmp_path / "run", holder.pid)
        proc = dermlit("train", *TINY, f"hydra.run.dir={tmp_path / 'run'}", cache=cache_dir)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, output(proc)
    (line,) = proc.stderr.strip().splitlines()
    assert f"{tmp_path / 'run'} is in use by PID {holder.pid} on " in line
    assert f"delete {tmp_path / 'run' / LOCK_FILE}" in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_FILE]


@pytest.mark.slow
def test_two_real_processes_in_one_directory(tmp_path: Path, cache_dir: Path) -> None:
    run = tmp_path / "run"
    env = {"DERMLIT_CACHE": str(cache_dir), "WANDB_MODE": "offline"}
    args = [*TINY, "trainer.max_epochs=50", f"hydra.run.dir={run}"]
    first = subprocess.Popen(
        [sys.executable, "-m", "dermlit.train", *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while not (run / ".hydra").is_dir() and time.time() < deadline:
            time.sleep(0.5)
        second = dermlit("train", *TINY, f"hydra.run.dir={run}", cache=cache_dir)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, output(second)
    assert f"is in use by PID {first.pid} on " in second.stderr


# ------------------------------------------------------------------ the guard, in-process
def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_log_line(tmp_path: Path, caplog) -> None:
    run = tmp_path / "run"
    pid = dead_pid()
    write_lock(run, pid)
    guard = RunDirGuard()
    guard.on_run_start(config(run))
    holder = json.loads((run / LOCK_FILE).read_text())
    assert holder["pid"] != pid
    with caplog.at_level(logging.WARNING):
        guard.on_job_start(config(run))
    assert f"took over the stale lock {run / LOCK_FILE} of PID {pid}" in caplog.text
    assert f"PID {pid} no longer exists" in caplog.text
    guard.on_job_end(config(run))
    assert not (run / LOCK_FILE).exists()


def test_lock_of_a_live_process_on_another_host_is_not_taken(tmp_path: Path) -> None:
    write_lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(RunDirLocked, match="in use by PID 1 on elsewhere"):
        RunDirLock(tmp_path).acquire()
    # ... unless it is this SLURM job's earlier incarnation (requeued)
    write_lock(tmp_path, 1, host="elsewhere", job="4242")
    lock = RunDirLock(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_JOB_ID", "4242")
        assert "earlier run of this SLURM job (4242)" in lock.acquire()
    lock.release()


def test_overwrite_deletes_the_old_runs_files_and_keeps_the_rest(tmp_path: Path, caplog) -> None:
    run = fake_run(tmp_path / "run")
    (run / "data").mkdir()
    guard = RunDirGuard()
    with pytest.raises(RunDirRefused, match="already holds a run"):
        guard.on_run_start(config(run))
    assert not (run / LOCK_FILE).exists()  # a refusal leaves no lock behind
    guard.on_run_start(config(run, overwrite=True))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "data", "notes.txt"]
    with caplog.at_level(logging.WARNING):
        guard.on_job_start(config(run))
    assert "overwrite=true: deleted the previous run's" in caplog.text
    assert "(kept: data, notes.txt)" in caplog.text
    guard.on_run_end(config(run))


def test_overwrite_deletes_the_old_runs_export_and_class_counts(tmp_path: Path) -> None:
    """dermlit export's default RUN/export/model.onnx and class_counts.json describe the old
    run's weights and split: overwrite=true deletes them with the rest."""
    run = fake_run(tmp_path / "run")
    (run / "export").mkdir()
    (run / "export" / "model.onnx").write_bytes(b"old weights")
    (run / "class_counts.json").write_text("{}")
    guard = RunDirGuard()
    guard.on_run_start(config(run, overwrite=True))
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "notes.txt"]
    guard.on_run_end(config(run))


def test_resume_of_the_same_directory_is_allowed_and_conflicts_are_refused(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    guard = RunDirGuard()
    guard.on_run_start(config(run, resume=f"{run}/"))
    guard.on_run_end(config(run))
    with pytest.raises(RunDirRefused, match="give one of them"):
        guard.on_run_start(config(run, resume=str(run), overwrite=True))
    with pytest.raises(RunDirRefused, match="drop hydra.run.dir"):
        guard.on_run_start(config(run, resume=str(tmp_path / "other")))


def test_ddp_child_ranks_are_neither_checked_nor_locked(tmp_path: Path, monkeypatch) -> None:
    run = fake_run(tmp_path / "run")
    write_lock(run, os.getppid())  # rank 0, alive
    for key in ("LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.setenv(key, "1")
        guard = RunDirGuard()
        guard.on_run_start(config(run))  # no refusal
        guard.on_job_start(config(run))
        guard.on_job_end(config(run))
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getppid()
        monkeypatch.delenv(key)


def test_a_requeued_slurm_job_continues_in_its_directory(tmp_path: Path, monkeypatch) -> None:
    run = fake_run(tmp_path / "run")
    write_status(run, {"state": "preempted", "slurm_job_id": "4242"})
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    with pytest.raises(RunDirRefused, match="already holds a run"):
        RunDirGuard().on_run_start(config(run))  # another job: refused
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    guard = RunDirGuard()
    guard.on_run_start(config(run))  # the same job, requeued
    guard.on_run_end(config(run))


def test_multirun_into_an_existing_sweep_is_refused_or_overwritten(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        fake_run(sweep / job, extra=None)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    guard = RunDirGuard()
    with pytest.raises(RunDirRefused) as err:
        guard.on_multirun_start(config(sweep))
    assert f"{sweep} already holds a multirun (2 job directories: 0, 1)" in err.value.message
    assert f"resume={sweep / '0'}" in err.value.message
    guard.on_multirun_start(config(sweep, overwrite=True))
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_FILE]
    # a job of this multirun locks its own directory; released when it ends
    job = config(sweep / "0")
    guard.on_job_start(job)
    assert (sweep / "0" / LOCK_FILE).is_file()
    guard.on_job_end(job)
    assert not (sweep / "0" / LOCK_FILE).exists()
    guard.on_multirun_end(config(sweep))
    assert not (sweep / LOCK_FILE).exists()


REFUSE_WITHOUT_LIGHTNING = """
import runpy, sys
sys.argv = ["dermlit-train", *sys.argv[1:]]
try:
    runpy.run_module("dermlit.train", run_name="__main__")
except SystemExit as stop:
    print("exit", stop.code, "lightning imported:", "lightning" in sys.modules)
"""


@pytest.mark.parametrize("refusal", ["occupied", "resume"])
def test_a_refusal_comes_before_lightning_is_imported(tmp_path: Path, refusal: str) -> None:
    """Refusals were printed after the Lightning import (~6 s each): dermlit.train is thin,
    the fit lives in dermlit.fit."""
    run = fake_run(tmp_path / "run")
    args = [f"hydra.run.dir={run}"] if refusal == "occupied" else [f"resume={tmp_path / 'none'}"]
    proc = subprocess.run(
        [sys.executable, "-c", REFUSE_WITHOUT_LIGHTNING, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "exit 2 lightning imported: False" in proc.stdout, proc.stdout + proc.stderr
    assert "dermlit-train:" in proc.stderr


@pytest.mark.parametrize(
    "env", [{}, {"RANK": "1"}, {"LOCAL_RANK": "0", "SLURM_PROCID": "3"}, {"SLURM_PROCID": "2"}]
)
def test_the_guards_rank_is_lightnings(monkeypatch, env: dict) -> None:
    from lightning.fabric.utilities.rank_zero import _get_rank

    from dermlit.run_dir_guard import is_rank_zero

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_rank_zero() == ((_get_rank() or 0) == 0)
