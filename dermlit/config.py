"""Where conf/ is, the OmegaConf resolvers it uses (registered once, before Hydra composes), and
composing it with Hydra's compose API outside a Hydra app (:func:`compose_config`)."""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: the repository's conf/ (an absolute path, so console scripts find it from any directory)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def wandb_offline() -> bool:
    """True when no W&B API key is configured (env var or ~/.netrc), so runs never block."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


def checkpoint_name(checkpoint: str) -> str:
    """``best``/``last`` as they are, a path by its file stem (for output folder names)."""
    return Path(str(checkpoint)).stem


def cycle_epochs(max_epochs: int, cycles: int) -> int:
    """Epochs per LR cycle when ``max_epochs`` is split into ``cycles`` equal ones, refused when
    it does not divide: the last cycle would be cut before its LR falls, and its snapshot lost."""
    max_epochs, cycles = int(max_epochs), int(cycles)
    if cycles < 1 or max_epochs % cycles:
        raise ValueError(
            f"trainer.max_epochs={max_epochs} is not {cycles} whole LR cycles: choose a multiple "
            f"of {cycles}, or set optim.scheduler.T_0 (epochs per cycle) yourself"
        )
    return max_epochs // cycles


def _wandb_group(mode: object, sweep_dir: str) -> str | None:
    from dermlit.loggers import wandb_group  # imports Lightning (5 s): only when resolved

    return wandb_group(mode, sweep_dir)


def _wandb_name(override_dirname: str, seed: int) -> str:
    from dermlit.loggers import wandb_name

    return wandb_name(override_dirname, seed)


def _wandb_run_id(run_dir: str) -> str | None:
    from dermlit.resume import wandb_run_id

    return wandb_run_id(Path(run_dir))


def register_resolvers() -> None:
    """The resolvers of conf/. Those that need Lightning import it when they are resolved, so
    that composing a config (``dermlit data check``) does not pay for it."""
    resolvers = {
        "dermlit_wandb_group": _wandb_group,
        "dermlit_wandb_name": _wandb_name,
        # a requeued SLURM job (same run dir) continues the same W&B run
        "dermlit_wandb_id": _wandb_run_id,
        "dermlit_wandb_offline": wandb_offline,
        "checkpoint_name": checkpoint_name,
        "dermlit_root": lambda: str(CONF_DIR.parent),
        # e.g. LDAM's DRW start: ${dermlit_fraction_of:${trainer.max_epochs},0.8}
        "dermlit_fraction_of": lambda n, fraction: int(round(float(n) * float(fraction))),
        # a restarting schedule's cycle: ${dermlit_cycle_epochs:${trainer.max_epochs},3}
        "dermlit_cycle_epochs": cycle_epochs,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


@contextmanager
def _hydra_at(conf_dir: Path) -> Iterator[None]:
    """Hydra initialised on ``conf_dir`` for the block; a Hydra already initialised (inside
    ``dermlit-train``, or a test's ``initialize_config_dir``) is put back afterwards."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().hydra = saved


def compose_config(
    config_name: str | None = "train",
    overrides: Sequence[str] = (),
    conf_dir: Path = CONF_DIR,
    return_hydra_config: bool = False,
) -> DictConfig:
    """``conf_dir`` composed by Hydra's compose API, as ``dermlit-train``/``dermlit-eval`` would
    compose it (defaults lists, group options, ``conf/local/``), for code outside a Hydra app:
    ``compose_config("train", ["data=ham10000"]).data``. ``config_name=None`` composes only the
    groups the overrides add (``["+augment=standard"]``)."""
    from hydra import compose

    register_resolvers()
    with _hydra_at(conf_dir):
        return compose(
            config_name, overrides=list(overrides), return_hydra_config=return_hydra_config
        )


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group (``data`` -> ``csv, dermamnist, ...``), without the
    ``_``-prefixed fragments (``data/_base``) that are not options."""
    from hydra.core.global_hydra import GlobalHydra

    with _hydra_at(conf_dir):
        options = GlobalHydra.instance().config_loader().get_group_options(group)
    return sorted(o for o in options if not o.startswith("_"))
