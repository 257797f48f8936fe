"""OmegaConf resolvers used by conf/ (registered once, before Hydra composes)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

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


def register_resolvers() -> None:
    from dermlit.loggers import wandb_group, wandb_name
    from dermlit.resume import wandb_run_id

    resolvers = {
        "dermlit_wandb_group": wandb_group,
        "dermlit_wandb_name": wandb_name,
        # a requeued SLURM job (same run dir) continues the same W&B run
        "dermlit_wandb_id": lambda run_dir: wandb_run_id(Path(run_dir)),
        "dermlit_wandb_offline": wandb_offline,
        "checkpoint_name": checkpoint_name,
        "dermlit_root": lambda: str(CONF_DIR.parent),
        # e.g. LDAM's DRW start: ${dermlit_fraction_of:${trainer.max_epochs},0.8}
        "dermlit_fraction_of": lambda n, fraction: int(round(float(n) * float(fraction))),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
