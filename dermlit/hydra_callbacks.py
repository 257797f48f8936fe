"""Hydra callbacks (``hydra.callbacks`` in conf/hydra/default.yaml and conf/eval.yaml).

- :class:`JobErrorFile`: Hydra's basic launcher keeps a failed job's exception in memory and
  raises it only after the whole batch of jobs has run, and it writes it nowhere in the job's
  directory. A sweep of 30 jobs then leaves a directory without metrics.json and no trace of
  why; this writes the traceback next to the job's other files, where ``dermlit sweep-summary``
  lists it.
- :class:`InputErrorExit`: Hydra prints a task's exception as a traceback; a
  :class:`~dermlit.errors.InputError` (bad input the user can fix) is printed as its message
  (exit 2), a :class:`~dermlit.errors.RunFailure` (e.g. a non-finite update) too (exit 1).
- :class:`OutputDirCheck`: an output directory that cannot be written is refused in one line
  before Hydra creates it (see :mod:`dermlit.output_dir`).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dermlit.errors import RUN_FAILURE_EXIT, InputError, RunFailure, exit_with
from dermlit.output_dir import output_dir_problem

#: the file a failed job's traceback goes to, in its output directory
ERROR_FILE = "error.log"


class JobErrorFile(Callback):
    """Write RUN_DIR/error.log when a job raises; remove a stale one when a rerun succeeds."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        path = Path(config.hydra.runtime.output_dir) / ERROR_FILE
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # the property would re-raise it
            text = "".join(traceback.format_exception(error))
            path.write_text(f"overrides: {list(job_return.overrides or [])}\n{text}")
        elif job_return.status == JobStatus.COMPLETED:
            path.unlink(missing_ok=True)


class InputErrorExit(Callback):
    """A single run that failed with an :class:`InputError` ends with its message on stderr and
    exit status 2, one with a :class:`RunFailure` with its message and exit status 1, not with
    Hydra's traceback (which :class:`JobErrorFile` keeps in error.log).

    ``on_run_end`` is the last hook before Hydra re-raises the job's exception; raising
    SystemExit there is not swallowed (Hydra's callback runner catches ``Exception`` only)."""

    def __init__(self, program: str) -> None:
        self.program = program

    def on_run_end(
        self, config: DictConfig, job_return: JobReturn | None = None, **kw: Any
    ) -> None:
        if job_return is None or job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value
        if isinstance(error, InputError):
            exit_with(self.program, str(error))
        if isinstance(error, RunFailure):
            run_dir = OmegaConf.select(config, "hydra.runtime.output_dir") or config.hydra.run.dir
            log = Path(run_dir) / ERROR_FILE
            exit_with(self.program, f"{error} (traceback: {log})", RUN_FAILURE_EXIT)


class OutputDirCheck(Callback):
    """Refuse an unwritable ``hydra.run.dir`` (a run) or ``hydra.sweep.dir`` (a multirun).

    ``on_run_start``/``on_multirun_start`` run after the config is composed and before Hydra's
    ``run_job`` makes the directory (hydra/_internal/hydra.py), so nothing has been loaded or
    trained yet. A directory that cannot be resolved is left to Hydra's own error.
    ``run_hint``/``sweep_hint``: how the user moves the directory, for the message."""

    def __init__(self, program: str, run_hint: str, sweep_hint: str = "") -> None:
        self.program, self.run_hint, self.sweep_hint = program, run_hint, sweep_hint

    def _check(self, config: DictConfig, key: str, what: str, hint: str) -> None:
        try:
            path = str(OmegaConf.select(config, key, throw_on_missing=True))
        except Exception:  # e.g. a resolver's error: Hydra reports it as it resolves the key
            return
        problem = output_dir_problem(path)
        if problem:
            exit_with(self.program, f"cannot create the {what} {path}: {problem}; {hint}")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir", "output directory", self.run_hint)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hint = self.sweep_hint or self.run_hint
        self._check(config, "hydra.sweep.dir", "sweep directory", hint)
