"""``RUN_DIR/status.json``: what became of a run, for scripts and ``dermlit sweep-summary``.

A directory without ``metrics.json`` used to mean anything from "still running" through
"preempted, resumable" to "crashed". ``dermlit-train`` (rank 0) now writes::

    {"state": "running" | "preempted" | "failed" | "completed",
     "step": 42, "epoch": 3, "max_epochs": 10, "updated": "2026-01-01T12:00:00+01:00",
     "started": "...", "pid": 1234, "host": "node17", "slurm_job_id": "4242" | null,
     "resumed_from": "RUN_DIR/hpc_ckpt_1.ckpt" | null,
     "checkpoint": "RUN_DIR/hpc_ckpt_2.ckpt",   # preempted: resume from here
     "resume": "dermlit-train resume=RUN_DIR",  # preempted: the command that continues it
     "error": "FloatingPointError: ..."}         # failed: the exception line

``running`` is rewritten at every epoch end (step and epoch advance); a process killed without
a chance to write (SIGKILL, out of memory) leaves ``running`` behind with its PID, which
:func:`effective_state` reports as ``died`` once that PID is gone. Writes are atomic (a
temporary file renamed over the old one), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dermlit.atomic import write_text_atomic
from dermlit.exit_codes import Preempted
from dermlit.run_lock import pid_alive, slurm_job_id

if TYPE_CHECKING:  # Lightning is imported where a run trains: a refusal needs none of it
    import lightning as L

#: the file, in the run directory
STATUS_FILE = "status.json"
STATES = ("running", "preempted", "failed", "completed")


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's status, None without a status.json; an unreadable one reads as ``unknown``."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text())
    except ValueError as err:
        return {"state": "unknown", "error": f"{path} is not valid JSON: {err}"}
    return (
        status
        if isinstance(status, dict)
        else {"state": "unknown", "error": f"{path}: not an object"}
    )


def effective_state(status: dict[str, Any] | None) -> str | None:
    """``state``, except ``died`` for a ``running`` run whose process is gone from this host."""
    if status is None:
        return None
    state = str(status.get("state", "unknown"))
    if state == "running" and status.get("host") == socket.gethostname():
        pid = status.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            return "died"
    return state


def write_status(run_dir: str | Path, status: dict[str, Any]) -> None:
    path = Path(run_dir) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(status, indent=2) + "\n")


class RunStatus:
    """The status of one ``dermlit-train`` process in ``run_dir``; writes only if ``enabled``
    (rank 0). ``previous`` is what the directory held before (a requeued or resumed run's)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, resumed_from: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.previous = read_status(self.run_dir)
        self.trainer: L.Trainer | None = None
        self.base = {
            "started": now(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "slurm_job_id": slurm_job_id(),
            "resumed_from": None if resumed_from is None else str(resumed_from),
        }

    def write(self, state: str, **fields: Any) -> None:
        assert state in STATES, state
        if not self.enabled:
            return
        progress: dict[str, Any] = {"step": None, "epoch": None, "max_epochs": None}
        if self.trainer is not None:
            progress = {
                "step": int(self.trainer.global_step),
                "epoch": int(self.trainer.current_epoch),
                "max_epochs": self.trainer.max_epochs,
            }
        write_status(
            self.run_dir, {"state": state, **progress, "updated": now(), **self.base, **fields}
        )

    def callback(self) -> L.Callback:
        """A Lightning callback that tracks the trainer and rewrites ``running`` per epoch."""
        from dermlit.callbacks.status_progress import StatusProgress

        return StatusProgress(self)


@contextmanager
def recorded_status(
    run_dir: str | Path, enabled: bool = True, resumed_from: Any = None
) -> Iterator[RunStatus]:
    """``running`` now; on the way out ``completed``, ``preempted`` (with the checkpoint and the
    command that resumes it) or ``failed`` (with the exception line)."""
    status = RunStatus(run_dir, enabled, resumed_from)
    status.write("running")
    try:
        yield status
    except Preempted as stop:
        run = status.run_dir.resolve()
        status.write("preempted", checkpoint=stop.checkpoint, resume=f"dermlit-train resume={run}")
        raise
    except BaseException as err:  # KeyboardInterrupt and Lightning's exit(1) on Ctrl+C included
        status.write("failed", error=f"{type(err).__name__}: {err}".strip())
        raise
    status.write("completed")
