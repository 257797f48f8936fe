"""One process per run directory: ``RUN_DIR/.dermlit.lock`` names the process that holds it.

Why a lock file and not ``fcntl.flock``: a refusal must name the holder (PID, host, SLURM job),
and flock is not honoured on every cluster file system (Lustre without ``-o flock``, some NFS
setups) that run directories live on. The price is staleness: a holder killed by SIGKILL or an
out-of-memory kill leaves its file behind. Such a lock is stale, and taken over with a log line,
when its holder is provably gone: the same host and a PID that no longer exists, or the same
SLURM job id as ours (the job was requeued: that holder was this job's earlier incarnation).
A holder on another host that is not our SLURM job cannot be checked; the refusal then says
which file to delete once that process is known to be gone.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

#: the lock's file name, inside the directory it locks
LOCK_FILE = ".dermlit.lock"


class RunDirLocked(RuntimeError):
    """The directory is locked by another live process."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def slurm_job_id() -> str | None:
    """``SLURM_JOB_ID``, or ``<array job>_<task>`` for a job array (kept across a requeue)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID")


@dataclass(frozen=True)
class Holder:
    """The process that holds (or held) a lock."""

    pid: int
    host: str
    slurm_job_id: str | None = None
    since: str = ""

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), socket.gethostname(), slurm_job_id(), datetime.now().isoformat())

    def describe(self) -> str:
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        since = f", since {self.since}" if self.since else ""
        return f"PID {self.pid} on {self.host}{job}{since}"

    def same_process(self, other: Holder) -> bool:
        return (self.pid, self.host) == (other.pid, other.host)

    def gone(self, me: Holder) -> str | None:
        """Why this holder is provably gone (the lock is stale), or None."""
        if self.host == me.host and not pid_alive(self.pid):
            return f"PID {self.pid} no longer exists"
        if self.slurm_job_id and self.slurm_job_id == me.slurm_job_id:
            return f"it is an earlier run of this SLURM job ({self.slurm_job_id}), requeued"
        return None


def read_holder(path: Path, retries: int = 3) -> Holder | None:
    """The holder named in ``path``; None if the file is gone. An empty or unreadable file (a
    holder between creating and writing it, or killed then) is re-read a few times first."""
    for attempt in range(retries):
        try:
            data = json.loads(path.read_text())
            return Holder(
                int(data["pid"]), str(data["host"]), data.get("slurm_job_id"), data.get("since", "")
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            if attempt + 1 < retries:
                time.sleep(0.2)
    return Holder(pid=-1, host="(unreadable lock file)")


class RunDirLock:
    """``acquire()`` or :class:`RunDirLocked`; ``release()`` (also at interpreter exit, so that a
    run ended by ``SystemExit``, e.g. a preemption, leaves no lock behind)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock; returns a line to log when a stale lock was taken over."""
        self.directory.mkdir(parents=True, exist_ok=True)
        me = Holder.me()
        note = None
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is None:
                    continue  # released meanwhile
                if holder.same_process(me):
                    self._hold()
                    return None
                why = "the file is unreadable" if holder.pid == -1 else holder.gone(me)
                if why is None:
                    raise RunDirLocked(self._refusal(holder)) from None
                self._take_over(holder)
                note = f"took over the stale lock {self.path} of {holder.describe()}: {why}"
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(asdict(me), file)
            self._hold()
            return note
        raise RunDirLocked(f"could not take the lock {self.path}: it keeps changing hands")

    def _take_over(self, stale: Holder) -> None:
        """Move the stale file aside atomically; if it turns out not to be the one judged stale
        (another process took it over meanwhile), put it back and refuse."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        found = read_holder(aside, retries=1)
        if found is not None and found.pid != -1 and found != stale:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            raise RunDirLocked(self._refusal(found))
        aside.unlink(missing_ok=True)

    def _refusal(self, holder: Holder) -> str:
        return (
            f"{self.directory} is in use by {holder.describe()}: wait for it to end or use "
            f"another directory (if that process is gone, delete {self.path})"
        )

    def _hold(self) -> None:
        if not self.held:
            self.held = True
            atexit.register(self.release)

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        holder = read_holder(self.path, retries=1)
        if holder is not None and holder.same_process(Holder.me()):
            self.path.unlink(missing_ok=True)
