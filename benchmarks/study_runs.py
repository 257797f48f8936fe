"""What the study drivers (``sam_study.py``, ``source_shift.py``) share: running one command
with its log and its wall/CPU times, and committing a finished run's artefacts at once (a
replaced machine loses outputs/, so every run is committed as it finishes)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def timed(repo: Path, cmd: list[str], log_path: Path) -> tuple[int, dict]:
    """Run ``cmd`` in ``repo`` (its dermlit first on the path), the log to ``log_path``;
    returns the exit status and ``{wall_s, user_s, sys_s}``."""
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    print(" ".join(cmd[1:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        status = subprocess.run(cmd, cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {
        "wall_s": round(time.perf_counter() - t0, 1),
        "user_s": round(after.ru_utime - before.ru_utime, 1),
        "sys_s": round(after.ru_stime - before.ru_stime, 1),
    }
    return status.returncode, timing


def commit(repo: Path, paths: list[Path], message: str) -> None:
    """Commit just these paths; retried because another process may hold the index lock."""
    rel = [str(p.relative_to(repo)) for p in paths]
    for _ in range(10):
        subprocess.run(["git", "add", "--", *rel], cwd=repo, check=False)
        done = subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=repo)
        if done.returncode == 0:
            return
        time.sleep(5)
    print(f"could not commit {rel}", file=sys.stderr)
