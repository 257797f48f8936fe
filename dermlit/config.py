"""OmegaConf resolvers used by conf/ (registered once, before Hydra composes)."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf


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


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("dermlit_wandb_offline"):
        OmegaConf.register_new_resolver("dermlit_wandb_offline", wandb_offline)
