"""``dermlit-train resume=RUN_DIR``: continue a run in place.

Hydra creates the run directory before the app runs, so ``resume`` cannot be handled inside the
task function: :func:`resumable` rewrites the command line first, into the run's own overrides
(``RUN_DIR/.hydra/overrides.yaml``) + the user's new ones (``trainer.max_epochs=20`` to extend
a run, see :mod:`dermlit.optim.replan`) + ``hydra.run.dir=RUN_DIR`` + ``ckpt_path=`` the newest
checkpoint (Lightning's ``hpc_ckpt_*.ckpt`` from a preemption, or ``checkpoints/last.ckpt``, the
newest epoch end) + the W&B run id to resume. Everything else comes from that checkpoint:
weights, optimizer and scheduler state, EMA, loop progress; the epoch-seeded samplers continue
from the restored epoch (and position, see :mod:`dermlit.callbacks.preemption`).

What a resume can change: ``trainer.max_epochs`` and the schedule's settings (re-planned, or
refused where they cannot be, :mod:`dermlit.optim.replan`), and what the config alone decides
(SAM's ``rho``, clipping, the data...). Not the optimizer's own settings (``optim.optimizer.*``:
its LR, weight decay, betas, class): Lightning restores them from the checkpoint with the
optimizer's state, so a new value would be silently ignored while ``.hydra/`` recorded it. Such
a resume (or a new run from ``ckpt_path=``, restored the same way) is refused before Hydra
writes anything (:func:`refuse_ignored_optimizer_changes`), naming each setting, the
checkpoint's value and the new one.

Every spelling means the same: ``resume=DIR``, ``+resume=DIR``, ``++resume=DIR``, a relative
path, a trailing slash, with or without ``hydra.run.dir=`` naming the same directory. Anything
that cannot be continued is refused (:class:`ResumeError`, exit status 2): no such directory, a
file, a multirun directory (resume one of its jobs), no ``.hydra/overrides.yaml`` (not a
dermlit-train run), no checkpoint, another ``hydra.run.dir``, ``-m``, a changed
``optim.optimizer`` setting.

The rewrite is idempotent: a rewritten command rewritten again is the same command, which is
how a DDP child rank (re-created from the rewritten overrides, :mod:`dermlit.distributed`) gets
the same configuration as rank 0.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from dermlit.checkpoints import newest_checkpoint
from dermlit.exit_codes import EXIT_REFUSED
from dermlit.run_dir_guard import RunDirRefused, job_dirs
from dermlit.run_lock import slurm_job_id

#: the W&B keys the rewrite derives from the run directory
_WANDB_KEYS = ("logger.wandb.id", "logger.wandb.resume")
#: the config keys the rewrite sets itself (an old value from the stored overrides is dropped)
_OWN_KEYS = ("resume", "ckpt_path", *_WANDB_KEYS)


class ResumeError(ValueError):
    """``resume=`` names no resumable run, or conflicts with the other arguments."""


def requeued_checkpoint(run_dir: Path, previous_status: dict | None) -> Path | None:
    """The checkpoint a requeued SLURM job continues from: the newest one, when the run
    directory's ``status.json`` was written by this same SLURM job (a requeue keeps the job id
    and re-runs the command, ``ckpt_path=null``). Lightning alone would take the highest
    ``hpc_ckpt_N.ckpt`` even where ``last.ckpt`` is newer (a job requeued after a node failure)."""
    job = slurm_job_id()
    if job is None or not previous_status or previous_status.get("slurm_job_id") != job:
        return None
    return newest_checkpoint(run_dir)


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


def _value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def _is_override(arg: str) -> bool:
    """Overrides are key=value or ~key; the rest are Hydra's flags and their values (-cn NAME)."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _resolve(value: str) -> Path:
    return Path(value).expanduser().resolve()


def run_directory(value: str) -> Path:
    """The run directory ``resume=value`` names, or :class:`ResumeError` saying why it is none."""
    run_dir = _resolve(value)
    if not run_dir.exists():
        raise ResumeError(f"resume={value}: no such directory {run_dir}")
    if not run_dir.is_dir():
        raise ResumeError(
            f"resume={value}: {run_dir} is a file, not a run directory (to start a new run from "
            "a checkpoint file, give ckpt_path= instead)"
        )
    stored = run_dir / ".hydra" / "overrides.yaml"
    jobs = job_dirs(run_dir)
    if not stored.is_file() and (jobs or (run_dir / "multirun.yaml").is_file()):
        names = ", ".join(j.name for j in jobs[:5]) or "none yet"
        example = run_dir / (jobs[0].name if jobs else "0")
        raise ResumeError(
            f"resume={value}: {run_dir} is a multirun directory (jobs: {names}); resume one job "
            f"at a time, e.g. resume={example}"
        )
    if not stored.is_file():
        raise ResumeError(
            f"resume={value}: no .hydra/overrides.yaml in {run_dir}; expected a dermlit-train "
            "run directory"
        )
    return run_dir


def resume_overrides(run_dir: str | Path, extra: Sequence[str] = ()) -> list[str]:
    """The overrides that continue ``run_dir``; ``extra`` (the user's) win over stored ones."""
    run_dir = run_directory(str(run_dir))
    stored = run_dir / ".hydra" / "overrides.yaml"
    extra = list(extra)
    user_keys = {_key(o) for o in extra}
    kept = [
        o
        for o in yaml.safe_load(stored.read_text()) or []
        if _key(o) not in user_keys and _key(o) not in _OWN_KEYS
    ]
    out = [*kept, *(o for o in extra if _key(o) not in _OWN_KEYS)]
    out += [f"hydra.run.dir={run_dir}", f"resume={run_dir}"]
    user_ckpt = [o for o in extra if _key(o) == "ckpt_path"]
    if user_ckpt:
        out.append(f"ckpt_path={_value(user_ckpt[-1])}")
    else:
        ckpt = newest_checkpoint(run_dir)
        if ckpt is None:
            raise ResumeError(
                f"resume={run_dir}: no checkpoint to resume from (neither hpc_ckpt_*.ckpt nor "
                "checkpoints/last.ckpt); start it again instead"
            )
        out.append(f"ckpt_path={ckpt}")
    user_wandb = [o for o in extra if _key(o) in _WANDB_KEYS]
    run_id = wandb_run_id(run_dir)
    if user_wandb:
        out += user_wandb
    elif run_id is not None and _logs_to_wandb(run_dir) and "logger" not in user_keys:
        out += [f"++logger.wandb.id={run_id}", "++logger.wandb.resume=allow"]
    return out


def saved_param_groups(ckpt_path: str | Path) -> list[dict[str, Any]] | None:
    """The param groups of the checkpoint's (first) optimizer; ``None`` when the file cannot be
    read or holds none (Lightning then says so itself)."""
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
        return list(ckpt["optimizer_states"][0]["param_groups"])
    except (OSError, RuntimeError, EOFError, KeyError, IndexError, TypeError, ValueError):
        return None


def refuse_ignored_optimizer_changes(overrides: Sequence[str]) -> None:
    """:class:`ResumeError` when the config that ``overrides`` compose sets an optimizer setting
    (``optim.optimizer.*``) other than the one the checkpoint (``ckpt_path=``) restores: Lightning
    would train on the checkpoint's value while the run directory recorded the new one. For
    ``resume=`` and for a new run from ``ckpt_path=`` alike (Lightning restores both the same)."""
    ckpt = [_value(o) for o in overrides if _key(o) == "ckpt_path"]
    groups = saved_param_groups(ckpt[-1]) if ckpt and ckpt[-1] not in ("", "null", "None") else None
    if not groups:
        return
    from hydra.utils import instantiate

    from dermlit.config import compose_config
    from dermlit.optim.replan import optimizer_changes

    composable = [o for o in overrides if not _key(o).startswith(("hydra.", "hydra/"))]
    try:
        cfg = compose_config("train", composable)
        make_optimizer = instantiate(cfg.optim.optimizer)
    except Exception:  # noqa: BLE001 - Hydra refuses the same overrides itself, with its message
        return
    changes = optimizer_changes(groups, make_optimizer)
    if not changes:
        return
    missing = sorted(k for k, (old, new) in changes.items() if old is None or new is None)
    if missing:  # settings one of the two optimizers does not have: another optimizer class
        target = str(cfg.optim.optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
        raise ResumeError(
            f"continuing from {ckpt[-1]} would change the optimizer to {target}, whose settings "
            f"differ from the checkpoint's optimizer's ({', '.join(missing)}), but Lightning "
            "restores the checkpoint's optimizer state: keep the run's own optim (drop the "
            "optim= change), or start a new run (without resume= or ckpt_path=) to train with "
            f"{target}"
        )
    listed = ", ".join(
        f"optim.optimizer.{k} {_hydra(old)} -> {_hydra(new) if new is not None else '(none)'}"
        for k, (old, new) in sorted(changes.items())
    )
    keep = " ".join(f"optim.optimizer.{k}={_hydra(old)}" for k, (old, _) in sorted(changes.items()))
    raise ResumeError(
        f"continuing from {ckpt[-1]} would change the optimizer's settings ({listed}), but "
        "Lightning restores them from the checkpoint: the new values would be ignored while the "
        f"run directory recorded them. Keep the checkpoint's settings (drop the change, or "
        f"give {keep}), or start a new run (without resume= or ckpt_path=) to train with the "
        "new ones"
    )


def _hydra(value: Any) -> str:
    """``value`` as a Hydra override value."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def _logs_to_wandb(run_dir: Path) -> bool:
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    return "wandb" in (config.get("logger") or {})


def expand_resume_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``resume=RUN_DIR`` expanded (see the module docstring); else unchanged."""
    args = list(argv[1:])
    resumes = [a for a in args if _is_override(a) and _key(a) == "resume"]
    value = _value(resumes[-1]) if resumes else ""
    if value in ("", "null", "None"):
        # a new run from ckpt_path= restores the optimizer's settings the same way
        refuse_ignored_optimizer_changes([a for a in args if _is_override(a)])
        return list(argv)
    if any(a in ("-m", "--multirun") for a in args):
        raise ResumeError("resume= continues one run; it cannot be combined with -m/--multirun")
    run_dir = run_directory(value)
    extra = [a for a in args if not (_is_override(a) and _key(a) == "resume")]
    flags = [a for a in extra if not _is_override(a)]
    overrides = [a for a in extra if _is_override(a)]
    for given in (o for o in overrides if _key(o) == "hydra.run.dir"):
        if _resolve(_value(given)) != run_dir:
            raise ResumeError(
                f"resume={value} continues the run in its own directory {run_dir}; "
                f"drop hydra.run.dir={_value(given)}"
            )
    overrides = [o for o in overrides if _key(o) != "hydra.run.dir"]
    expanded = resume_overrides(run_dir, overrides)
    refuse_ignored_optimizer_changes(expanded)
    return [argv[0], *flags, *expanded]


def resumable(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``@hydra.main`` function so that ``resume=RUN_DIR`` is expanded before Hydra
    parses the command line, and a refusal (a bad ``resume=``, a run directory that is taken,
    :mod:`dermlit.run_dir_guard`) ends as one line and exit status 2, not a traceback.
    Called with a config (tests, Hydra's passthrough) it is a no-op."""

    @functools.wraps(hydra_main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return hydra_main(*args, **kwargs)
        try:
            sys.argv = expand_resume_argv(sys.argv)
            return hydra_main()
        except ResumeError as err:
            print(f"dermlit-train: {err}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)
        except RunDirRefused as err:
            print(f"dermlit-train: {err.message}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)

    return wrapper
