"""Finding a run's checkpoint and loading its weights with errors that name the offender."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: state_dict entries that are not model weights: loss buffers built from class counts, and the
#: augmentation pipelines that checkpoints written before they left the state_dict still hold
NON_WEIGHT_PREFIXES = ("criterion.", "augment.")


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """``best`` (by val/macro_f1), ``last``, or an explicit path."""
    ckpt_dir = run_dir / "checkpoints"
    if which == "last":
        path = ckpt_dir / "last.ckpt"
    elif which == "best":
        best = sorted(ckpt_dir.glob("best-*.ckpt"))
        if not best:
            raise FileNotFoundError(f"no best-*.ckpt in {ckpt_dir} (was validation disabled?)")
        path = best[-1]
    else:
        path = Path(which)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load ``path`` into ``model``; a checkpoint of another architecture is refused by name."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    weights = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith(NON_WEIGHT_PREFIXES)}
    expected = {k for k in model.state_dict() if not k.startswith(NON_WEIGHT_PREFIXES)}
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit this model ({type(model).__name__}): "
            f"{len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    mismatched = [
        k for k, v in model.state_dict().items() if k in weights and weights[k].shape != v.shape
    ]
    if mismatched:
        raise ValueError(f"{path} does not fit this model: shape mismatch in {mismatched[:3]}")
    model.load_state_dict(weights, strict=False)
