"""A run directory belongs to one run: ``dermlit-train``'s Hydra callback (conf/hydra/default.yaml).

Two runs started into one ``hydra.run.dir`` used to leave ``.hydra/`` of one, ``metrics.json`` of
the other and checkpoints of both. Hydra creates the job directory and writes
``.hydra/{config,hydra,overrides}.yaml`` and the job log BEFORE the task function runs
(``hydra.core.utils.run_job``), so the task function is too late to refuse; Hydra's
``on_run_start`` callback sees the composed config before any of that, and so does
``on_multirun_start`` for a sweep directory. Rules (rank 0 only, see :func:`is_rank_zero`):

- a directory that holds a run (any of :data:`RUN_MARKERS`) is refused unless this is
  ``resume=`` of that very directory, ``overwrite=true`` (the old run's files, :data:`RUN_ENTRIES`,
  are deleted first; other files are kept), or the same SLURM job as the one recorded in its
  ``status.json`` (a requeued job re-runs its command in its directory and resumes);
- a sweep directory that holds a multirun (``multirun.yaml`` or job directories) is refused unless
  ``overwrite=true`` (each job directory is cleared as above);
- one process at a time: :class:`dermlit.run_lock.RunDirLock` on the run (and sweep) directory,
  taken before Hydra writes anything, released when the job ends or the process exits.

DDP child ranks (``LOCAL_RANK``/``RANK``/``SLURM_PROCID`` > 0) re-run the command into the same
directory on purpose (``dermlit.distributed``): they are neither checked nor locked.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dermlit.run_lock import RunDirLock, RunDirLocked, slurm_job_id
from dermlit.status import read_status

log = logging.getLogger(__name__)

#: what makes a directory a run's (any one of them)
RUN_MARKERS = (".hydra", "checkpoints", "metrics.json", "status.json")
#: what ``overwrite=true`` deletes: everything dermlit-train and its loggers write
RUN_ENTRIES = (
    *RUN_MARKERS,
    "csv",
    "tensorboard",
    "wandb",
    "report",
    "eval",
    "export",
    "predictions.csv",
    "val_predictions.csv",
    "splits.csv",
    "class_counts.json",
    "skipped.csv",
)
#: ... and these patterns: Hydra's job logs (train.log, ddp_rank_1.log), error.log, preemptions
RUN_PATTERNS = ("*.log", "hpc_ckpt_*.ckpt")


class RunDirRefused(SystemExit):
    """A refusal before anything ran. A ``SystemExit`` so that Hydra passes it through rather
    than printing a traceback; :func:`dermlit.resume.resumable` prints ``message`` as one line
    and exits with :data:`dermlit.exit_codes.EXIT_REFUSED`."""

    def __init__(self, message: str) -> None:
        super().__init__(f"dermlit-train: {message}")
        self.message = message


#: the launchers' rank variables, in the order Lightning's ``_get_rank`` reads them
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero() -> bool:
    """Rank from the launcher's environment, read as Lightning's ``_get_rank`` reads it (no
    rank: a single process). Not imported from Lightning: that import (~6 s) would come before
    every refusal this guard makes."""
    rank = next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), "0")
    return int(rank) == 0


def run_markers(directory: Path) -> list[str]:
    """The entries that make ``directory`` a run's (empty: a fresh or empty directory)."""
    if not directory.is_dir():
        return []
    found = [name for name in RUN_MARKERS if (directory / name).exists()]
    return found + sorted(p.name for p in directory.glob("hpc_ckpt_*.ckpt"))


def clear_run(directory: Path) -> tuple[list[str], list[str]]:
    """Delete a run's files from ``directory``: returns (removed, kept) entry names."""
    doomed = {directory / name for name in RUN_ENTRIES}
    doomed |= {p for pattern in RUN_PATTERNS for p in directory.glob(pattern)}
    removed = []
    for path in sorted(p for p in doomed if p.exists() or p.is_symlink()):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    kept = sorted(p.name for p in directory.iterdir() if p.name != ".dermlit.lock")
    return removed, kept


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories of a multirun: subdirectories holding ``.hydra/``."""
    if not sweep_dir.is_dir():
        return []
    return sorted(d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir())


def _same_path(a: Any, b: Path) -> bool:
    return Path(str(a)).expanduser().resolve() == b


def check_run_dir(run_dir: Path, config: DictConfig) -> str | None:
    """Refuse (:class:`RunDirRefused`) or allow starting a single run in ``run_dir``; returns a
    line to log when ``overwrite=true`` deleted an old run."""
    resume, overwrite = config.get("resume"), bool(config.get("overwrite", False))
    if resume not in (None, "") and overwrite:
        raise RunDirRefused(
            f"resume={resume} continues the run and overwrite=true deletes it: give one of them"
        )
    if resume not in (None, ""):
        if not _same_path(resume, run_dir):
            raise RunDirRefused(
                f"resume={resume} continues the run in its own directory, but hydra.run.dir is "
                f"{run_dir}: drop hydra.run.dir"
            )
        return None
    markers = run_markers(run_dir)
    if not markers:
        return None
    previous = read_status(run_dir) or {}
    job = slurm_job_id()
    if job is not None and previous.get("slurm_job_id") == job:
        return None  # this SLURM job, requeued: it resumes (dermlit.resume.requeued_checkpoint)
    if overwrite:
        removed, kept = clear_run(run_dir)
        note = f"overwrite=true: deleted the previous run's {', '.join(removed)} from {run_dir}"
        return note + (f" (kept: {', '.join(kept)})" if kept else "")
    raise RunDirRefused(
        f"{run_dir} already holds a run ({', '.join(markers)}): continue it with "
        f"`dermlit-train resume={run_dir}`, replace it with overwrite=true, or choose another "
        "hydra.run.dir"
    )


def check_sweep_dir(sweep_dir: Path, config: DictConfig) -> str | None:
    """The same for a multirun's ``hydra.sweep.dir``."""
    jobs = job_dirs(sweep_dir)
    if not jobs and not (sweep_dir / "multirun.yaml").exists():
        return None
    if bool(config.get("overwrite", False)):
        for job in jobs:
            clear_run(job)
            if not any(job.iterdir()):
                job.rmdir()
        for name in ("multirun.yaml", "summary"):
            path = sweep_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            path.unlink(missing_ok=True)
        return f"overwrite=true: deleted the previous multirun's {len(jobs)} job(s) in {sweep_dir}"
    names = ", ".join(j.name for j in jobs[:5]) + (", ..." if len(jobs) > 5 else "")
    example = f"{sweep_dir / jobs[0].name}" if jobs else f"{sweep_dir}/N"
    raise RunDirRefused(
        f"{sweep_dir} already holds a multirun ({len(jobs)} job director{'y' if len(jobs) == 1 else 'ies'}"
        f"{': ' + names if jobs else ''}): summarise it with `dermlit sweep-summary {sweep_dir}`, "
        f"continue one job with `dermlit-train resume={example}`, replace it with overwrite=true, "
        "or choose another hydra.sweep.dir"
    )


class RunDirGuard(Callback):
    """Hydra callback: the checks and locks of the module docstring."""

    def __init__(self) -> None:
        self._locks: dict[Path, RunDirLock] = {}
        self._notes: list[str] = []

    def _lock(self, directory: Path) -> None:
        lock = self._locks.setdefault(directory, RunDirLock(directory))
        try:
            note = lock.acquire()
        except RunDirLocked as err:
            raise RunDirRefused(str(err)) from None
        if note:
            self._notes.append(note)

    def _release(self, directory: Path) -> None:
        lock = self._locks.pop(directory, None)
        if lock is not None:
            lock.release()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        run_dir = Path(str(config.hydra.run.dir)).expanduser().resolve()
        self._lock(run_dir)  # first: a live holder is named even if it has written nothing yet
        try:
            note = check_run_dir(run_dir, config)
        except RunDirRefused:
            self._release(run_dir)
            raise
        if note:
            self._notes.append(note)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).expanduser().resolve()
        self._lock(sweep_dir)
        try:
            note = check_sweep_dir(sweep_dir, config)
        except RunDirRefused:
            self._release(sweep_dir)
            raise
        if note:
            self._notes.append(note)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if is_rank_zero():
            # a multirun job (a requeued SLURM job takes its earlier incarnation's lock over)
            self._lock(Path(str(config.hydra.runtime.output_dir)).resolve())
        for note in self._notes:
            log.warning(note)
        self._notes = []

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._release(Path(str(config.hydra.runtime.output_dir)).resolve())

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        for directory in list(self._locks):
            self._release(directory)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for directory in list(self._locks):
            self._release(directory)
