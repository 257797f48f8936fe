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
