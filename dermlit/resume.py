"""``dermlit-train resume=RUN_DIR``: continue a run in place.

Hydra creates the run directory before the app runs, so ``resume`` cannot be handled inside the
task function: :func:`resumable` rewrites the command line first, into the run's own overrides
(``RUN_DIR/.hydra/overrides.yaml``) + the user's new ones (``trainer.max_epochs=20`` to extend
a run) + ``hydra.run.dir=RUN_DIR`` + ``ckpt_path=`` the newest checkpoint (Lightning's
``hpc_ckpt_*.ckpt`` from a preemption, or ``checkpoints/last.ckpt``) + the W&B run id to resume.
Everything else comes from that checkpoint: weights, optimizer and scheduler state, EMA, loop
progress; the epoch-seeded samplers continue from the restored epoch (and position, see
:mod:`dermlit.callbacks.preemption`).

The rewritten command keeps ``resume=RUN_DIR`` and names ``hydra.run.dir``; such a command line
(a DDP child re-created from it, see :mod:`dermlit.distributed`) is left as it is.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

#: the config keys the rewrite sets itself (an old value from the stored overrides is dropped)
_OWN_KEYS = ("resume", "ckpt_path", "logger.wandb.id", "logger.wandb.resume")


class ResumeError(ValueError):
    """``resume=`` names no resumable run, or conflicts with the other arguments."""


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of ``hpc_ckpt_*.ckpt`` (a preempted run, written into the run
    directory, Lightning's ``default_root_dir``) and ``checkpoints/last.ckpt``."""
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None


def wandb_run_id(run_dir: Path) -> str | None:
    """The id of the run's W&B run: ``wandb/latest-run`` links to ``[offline-]run-<time>-<id>``."""
    latest = run_dir / "wandb" / "latest-run"
    if not latest.exists():
        return None
    name = latest.resolve().name
    return name.rsplit("-", 1)[-1] if name.count("-") >= 2 else None


def _key(override: str) -> str:
    """``key`` of ``key=v``, ``+key=v``, ``++key=v``, ``~key``, ``group@pkg=v``."""
    return override.lstrip("+~").split("=", 1)[0]


def resume_overrides(run_dir: str | Path, extra: Sequence[str] = ()) -> list[str]:
    """The overrides that continue ``run_dir``; ``extra`` (the user's) win over stored ones."""
    run_dir = Path(run_dir).expanduser().resolve()
    stored = run_dir / ".hydra" / "overrides.yaml"
    if not stored.is_file():
        raise ResumeError(
            f"resume={run_dir}: no {stored.relative_to(run_dir)} there; "
            "expected a dermlit-train run directory"
        )
    extra = list(extra)
    user_keys = {_key(o) for o in extra}
    kept = [
        o
        for o in yaml.safe_load(stored.read_text()) or []
        if _key(o) not in user_keys and _key(o) not in _OWN_KEYS
    ]
    out = [*kept, *extra, f"hydra.run.dir={run_dir}", f"resume={run_dir}"]
    if "ckpt_path" not in user_keys:
        ckpt = newest_checkpoint(run_dir)
        if ckpt is None:
            raise ResumeError(
                f"resume={run_dir}: no checkpoint to resume from (neither hpc_ckpt_*.ckpt nor "
                "checkpoints/last.ckpt); start it again instead"
            )
        out.append(f"ckpt_path={ckpt}")
    run_id = wandb_run_id(run_dir)
    if (
        run_id is not None
        and _logs_to_wandb(run_dir)
        and not any(_key(o) == "logger" for o in extra)
    ):
        out += [f"++logger.wandb.id={run_id}", "++logger.wandb.resume=allow"]
    return out


def _logs_to_wandb(run_dir: Path) -> bool:
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    return "wandb" in (config.get("logger") or {})


def expand_resume_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``resume=RUN_DIR`` expanded (see the module docstring); else unchanged."""
    args = list(argv[1:])
    resumes = [a for a in args if a.startswith("resume=")]
    value = resumes[-1].split("=", 1)[1] if resumes else ""
    if value in ("", "null", "None"):
        return list(argv)
    run_dirs = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
    if run_dirs:  # already expanded (a DDP child), or a conflicting directory
        if Path(run_dirs[-1]).resolve() != Path(value).expanduser().resolve():
            raise ResumeError(
                f"resume={value} continues the run in its own directory; "
                f"drop hydra.run.dir={run_dirs[-1]}"
            )
        return list(argv)
    if any(a in ("-m", "--multirun") for a in args):
        raise ResumeError("resume= continues one run; it cannot be combined with -m/--multirun")
    extra = [a for a in args if not a.startswith("resume=")]
    # overrides are key=value or ~key; the rest are Hydra's flags and their values (-cn NAME)
    is_override = [not a.startswith("-") and ("=" in a or a.startswith("~")) for a in extra]
    flags = [a for a, o in zip(extra, is_override, strict=True) if not o]
    overrides = [a for a, o in zip(extra, is_override, strict=True) if o]
    return [argv[0], *flags, *resume_overrides(value, overrides)]


def resumable(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``@hydra.main`` function so that ``resume=RUN_DIR`` is expanded before Hydra
    parses the command line. Called with a config (tests, Hydra's passthrough) it is a no-op."""

    @functools.wraps(hydra_main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            try:
                sys.argv = expand_resume_argv(sys.argv)
            except ResumeError as err:
                sys.exit(f"dermlit-train: {err}")
        return hydra_main(*args, **kwargs)

    return wrapper
