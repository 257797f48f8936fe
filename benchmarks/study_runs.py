"""What the study drivers (``sam_study.py``, ``source_shift.py``, ``recipe_search.py``) share:
running one command with its log and its wall/CPU times, archiving a finished run's small
artefacts and committing them at once (a replaced machine loses outputs/, so every run is
committed as it finishes)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dermlit.archive import REQUIRED, archive_run


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


def run_and_archive(
    repo: Path,
    cmd: list[str],
    *,
    out_dir: Path,
    dest: Path,
    log_path: Path,
    record: dict,
    message: str,
    required: tuple[str, ...] = REQUIRED,
    finish: Callable[[Path], list[Path]] | None = None,
) -> bool:
    """The step every study driver repeats for one run, so that none of them can skip a part:

    an archived ``dest`` is not run again; otherwise ``out_dir`` (what ``cmd`` writes: a
    training's run directory or a re-evaluation's output) starts empty, ``cmd`` runs
    :func:`timed`, a failure names its log and returns False; a success is archived into
    ``dest`` with ``time.json`` (the timing plus ``record``), ``finish(dest)`` adds what the
    driver adds (a priors file, an index) and returns further paths to commit, and all of it is
    committed at once. ``message`` may use ``{wall_s}`` and ``{wall_min}``."""
    label = _label(repo, dest)
    if (dest / "metrics.json").is_file():
        print(f"{label}: archived already")
        return True
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an unfinished earlier attempt
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    status, timing = timed(repo, cmd, log_path)
    if status != 0:
        print(f"{label}: exit {status}, see {log_path}")
        return False
    archive_run(out_dir, dest, required=required)
    (dest / "time.json").write_text(json.dumps({**timing, **record}, indent=2) + "\n")
    extra = finish(dest) if finish else []
    wall = {"wall_s": timing["wall_s"], "wall_min": timing["wall_s"] / 60}
    commit(repo, [dest, *extra], message.format(**wall))
    return True


def reevaluate(
    repo: Path,
    source: Path,
    overrides: list[str],
    *,
    out_dir: Path,
    dest: Path,
    log_path: Path,
    message: str,
    record: dict | None = None,
    finish: Callable[[Path], list[Path]] | None = None,
) -> bool:
    """:func:`run_and_archive` of ``dermlit-eval`` with other ``overrides``, into an output
    directory of its own (the source stays as it was). ``source``: a trained run (its
    checkpoint, in outputs/, so only on the machine that trained it), or an ARCHIVED
    evaluation with undecided predictions (``predictions.csv`` + ``val_predictions.csv``,
    e.g. ``posthoc=none``'s), which serves rules that need no weights (a decision rule) on any
    machine."""
    if (dest / "metrics.json").is_file():
        print(f"{_label(repo, dest)}: archived already")
        return True
    if (source / "checkpoints").is_dir():
        inputs = [f"run_dir={source}"]
    elif (source / "val_predictions.csv").is_file():
        inputs = [f"predictions={source}/predictions.csv"]
        inputs += [f"val_predictions={source}/val_predictions.csv"]
    else:
        print(f"{dest.name}: needs a trained run's checkpoints or archived predictions in {source}")
        return False
    overrides = [*inputs, f"output_dir={out_dir}", *overrides]
    return run_and_archive(
        repo,
        [sys.executable, "-m", "dermlit.evaluate", *overrides],
        out_dir=out_dir,
        dest=dest,
        log_path=log_path,
        record={**(record or {}), "overrides": overrides},
        message=message,
        required=("metrics.json", "predictions.csv"),
        finish=finish,
    )


def _label(repo: Path, dest: Path) -> Path:
    return dest.relative_to(repo) if dest.is_relative_to(repo) else dest
