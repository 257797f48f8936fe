"""Exit statuses of ``dermlit-train``, so that a job script can tell the outcomes apart.

- 0: completed (metrics.json written).
- 1: failed (an error; ``RUN_DIR/status.json`` says ``failed``, ``error.log`` holds a multirun
  job's traceback). Hydra's own configuration errors exit 1 as well.
- 2: refused before anything ran (a run directory that holds another run or is in use, a
  ``resume=`` that names no resumable run); the message names the offender and what to do.
- 75: preempted (``EX_TEMPFAIL`` of sysexits.h, "try again"): SIGUSR1/SIGTERM arrived, a
  checkpoint was written, ``status.json`` says ``preempted`` and names it; continue with
  ``dermlit-train resume=RUN_DIR`` (a requeued SLURM job does so by itself).
"""

from __future__ import annotations

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_PREEMPTED = 75


class Preempted(SystemExit):
    """Raised after the preemption checkpoint is written: ends the process without testing,
    with exit status ``code`` (75 by default); ``checkpoint`` is the file to resume from. Here
    rather than beside the callback, so that reading a run's status imports no Lightning."""

    def __init__(self, code: int = EXIT_PREEMPTED, checkpoint: str | None = None) -> None:
        super().__init__(code)
        self.checkpoint = checkpoint
