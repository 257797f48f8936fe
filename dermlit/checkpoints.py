"""Finding a run's checkpoint and loading its weights with errors that name the offender."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: state_dict entries that are not model weights: loss buffers built from class counts, and the
#: augmentation pipelines that checkpoints written before they left the state_dict still hold
NON_WEIGHT_PREFIXES = ("criterion.", "augment.")


class CheckpointError(ValueError):
    """Which checkpoint is meant cannot be decided (e.g. several best-*.ckpt, no record)."""


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of ``hpc_ckpt_*.ckpt`` (a preempted run, written into the run
    directory, Lightning's ``default_root_dir``) and ``checkpoints/last.ckpt``."""
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    existing = [p for p in candidates if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None


def recorded_best(run_dir: Path) -> tuple[set[str], str]:
    """File names of the best checkpoint as the run recorded it: the monitored ModelCheckpoint's
    ``best_model_path`` in the state saved with the run's newest checkpoint (last.ckpt is
    written after the best one in the same epoch, see dermlit/callbacks/checkpoints.py). By
    name, so that a moved run directory still resolves. Also returns why there is none."""
    newest = newest_checkpoint(run_dir)
    if newest is None:
        return set(), "there is no checkpoints/last.ckpt or hpc_ckpt_*.ckpt to read its record from"
    try:
        ckpt = torch.load(newest, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:
        return set(), f"{newest} is unreadable ({err})"
    states = (ckpt.get("callbacks") or {}) if isinstance(ckpt, dict) else {}
    names = {
        Path(state["best_model_path"]).name
        for key, state in states.items()
        if str(key).startswith("ModelCheckpoint")
        and isinstance(state, dict)
        and state.get("monitor")
        and state.get("best_model_path")
    }
    return names, "" if names else f"{newest.name} records no best checkpoint"


def resolve_best(ckpt_dir: Path) -> Path:
    """The run's recorded best ``best-*.ckpt`` (not the last one in sort order: with
    ``save_top_k > 1``, epochs past 99 or files of another run that is the wrong one)."""
    candidates = sorted(ckpt_dir.glob("best-*.ckpt"))
    if not candidates:
        raise FileNotFoundError(f"no best-*.ckpt in {ckpt_dir} (was validation disabled?)")
    recorded, why = recorded_best(ckpt_dir.parent)
    chosen = [p for p in candidates if p.name in recorded]
    if len(chosen) == 1:
        return chosen[0]
    if len(candidates) == 1 and not recorded:
        return candidates[0]  # a run without a record (written before it existed)
    if recorded and not chosen:
        why = f"its record names {', '.join(sorted(recorded))}, which is not there"
    elif len(chosen) > 1:
        why = f"its record names several ({', '.join(p.name for p in chosen)})"
    raise CheckpointError(
        f"{ckpt_dir} holds {len(candidates)} best checkpoints "
        f"({', '.join(p.name for p in candidates)}) and {why}: choose one with "
        f"checkpoint={candidates[0]}"
    )


def resolve_checkpoint(run_dir: Path, which: str) -> Path:
    """``best`` (the run's recorded best by its monitor, val/macro_f1 by default), ``last``
    (the newest epoch end), or an explicit path."""
    ckpt_dir = run_dir / "checkpoints"
    if which == "last":
        path = ckpt_dir / "last.ckpt"
    elif which == "best":
        path = resolve_best(ckpt_dir)
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
