"""The checkpoint layouts (which key holds which weights), finding a run's checkpoint, and the
one load of its weights, with errors that name the offender.

Layouts of the weight sets in a checkpoint dict:

- without EMA: ``state_dict`` holds the raw weights;
- Lightning's ``WeightAveraging`` (dermlit's EMA with ``export=ema``): the average in
  ``state_dict``, the raw weights in ``current_model_state``;
- dermlit's EMA with ``export=raw``: the raw weights in ``state_dict``, the average in
  ``ema_state_dict`` (converted to Lightning's layout when loaded, :func:`to_lightning_layout`).

``dermlit_optim`` holds the update rule's own state (LookSAM's g_v).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dermlit.errors import InputError

if TYPE_CHECKING:
    from torch import nn

#: Lightning's key: the weights that are tested and exported (the average in an EMA checkpoint)
STATE_DICT = "state_dict"
#: Lightning's ``WeightAveraging`` key: the raw (trained) weights beside an average
RAW_STATE = "current_model_state"
#: dermlit's EMA with ``export=raw``: the average beside the raw weights in ``state_dict``
EMA_STATE = "ema_state_dict"
#: the update rule's own state (``DermClassifier.on_save_checkpoint``)
OPTIM_STATE = "dermlit_optim"
#: in Lightning's layout, the key of each weight set an EMA checkpoint holds
LIGHTNING_LAYOUT = {"ema": STATE_DICT, "raw": RAW_STATE}
#: ``dermlit-eval weights=``: default is what the checkpoint's state_dict holds (what
#: dermlit-train tested)
WEIGHTS = ("default", "raw", "ema")

#: file-name prefix of a snapshot ensemble's members: checkpoints/snapshot-epochNN.ckpt
#: (``dermlit.callbacks.checkpoints.SnapshotCheckpoint``)
SNAPSHOT_PREFIX = "snapshot-epoch"
#: ``test_weights`` / ``dermlit-eval checkpoint=`` value for the ensemble of all snapshots
SNAPSHOTS = "snapshots"

#: state_dict entries that are not model weights: loss buffers built from class counts, and the
#: augmentation pipelines that checkpoints written before they left the state_dict still hold
NON_WEIGHT_PREFIXES = ("criterion.", "augment.")


def to_raw_export_layout(checkpoint: dict[str, Any]) -> None:
    """Lightning's layout -> ``export=raw``'s (raw in ``state_dict``), in place."""
    if RAW_STATE in checkpoint:
        checkpoint[EMA_STATE] = checkpoint[STATE_DICT]
        checkpoint[STATE_DICT] = checkpoint.pop(RAW_STATE)


def to_lightning_layout(checkpoint: dict[str, Any]) -> None:
    """``export=raw``'s layout -> Lightning's (the average in ``state_dict``), in place."""
    if EMA_STATE in checkpoint:
        checkpoint[RAW_STATE] = checkpoint[STATE_DICT]
        checkpoint[STATE_DICT] = checkpoint.pop(EMA_STATE)


def train_raw_weights(checkpoint: dict[str, Any]) -> None:
    """Make ``state_dict`` the raw weights (resuming an EMA run's fit without the callback)."""
    if RAW_STATE in checkpoint:
        checkpoint[STATE_DICT] = checkpoint[RAW_STATE]


def select_weights(ckpt: dict[str, Any], weights: str, path: Path) -> dict | None:
    """The state dict for ``weights`` (:data:`WEIGHTS`), or None for the checkpoint's own
    ``state_dict`` (which weights are these: the module docstring's layouts)."""
    if weights not in WEIGHTS:
        raise InputError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "default":
        return None
    if weights == "ema":
        if EMA_STATE in ckpt:
            return ckpt[EMA_STATE]
        if RAW_STATE in ckpt:
            return None
        raise InputError(
            f"{path} holds no EMA weights (trained without callbacks=ema); use weights=raw"
        )
    return ckpt.get(RAW_STATE)


class CheckpointError(InputError):
    """The checkpoint asked for cannot be used: which one is meant cannot be decided (several
    best-*.ckpt, no record), or the file is not a checkpoint of this model. The CLIs print it in
    one line (exit status 2)."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No checkpoint where one was asked for (still a FileNotFoundError for its callers)."""


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
    import torch  # here, not at the top: resume= and the run-dir refusals read paths only

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
        raise CheckpointNotFound(
            f"no best-*.ckpt in {ckpt_dir}: validation was disabled, or the run trained with "
            "debug=fdr, which keeps no checkpoint (train it without fast_dev_run; its "
            "predictions.csv can still be evaluated: dermlit-eval predictions=RUN/predictions.csv)"
        )
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
        raise CheckpointNotFound(
            f"checkpoint not found: {path} (checkpoint= takes best, last, snapshots or a path)"
        )
    return path


def snapshot_epoch(path: Path) -> int:
    """The epoch in a snapshot's file name (``snapshot-epoch07.ckpt`` -> 7)."""
    return int(path.stem.removeprefix(SNAPSHOT_PREFIX))


def resolve_snapshots(run_dir: Path) -> list[Path]:
    """The members of the run's snapshot ensemble, in epoch order (epoch 100 after 99)."""
    ckpt_dir = run_dir / "checkpoints"
    found = [
        p
        for p in ckpt_dir.glob(f"{SNAPSHOT_PREFIX}*.ckpt")
        if p.stem[len(SNAPSHOT_PREFIX) :].isdigit()
    ]
    if not found:
        raise CheckpointNotFound(
            f"no {SNAPSHOT_PREFIX}NN.ckpt in {ckpt_dir}: a snapshot ensemble is trained with "
            "callbacks=ema_snapshots and a restarting LR schedule (optim=adamw_restarts)"
        )
    return sorted(found, key=snapshot_epoch)


def resolve_checkpoints(run_dir: Path, which: str) -> list[Path]:
    """The checkpoints whose predictions are averaged: every snapshot for ``snapshots``
    (:data:`SNAPSHOTS`), else the one :func:`resolve_checkpoint` finds."""
    if which == SNAPSHOTS:
        return resolve_snapshots(run_dir)
    return [resolve_checkpoint(run_dir, which)]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (read once), refused by name unless it is Lightning's."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or STATE_DICT not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def load_model_weights(model: nn.Module, path: Path, weights: str = "default") -> None:
    """Load ``path`` into ``model`` (one read): its ``state_dict``, checked by name and shape (a
    checkpoint of another architecture is refused by name), then the chosen weight set
    (:data:`WEIGHTS`) swapped in."""
    ckpt = read_checkpoint(path)
    load_state(model, ckpt[STATE_DICT], path)
    chosen = select_weights(ckpt, weights, path)
    if chosen is None:
        return
    chosen = {k: v for k, v in chosen.items() if not k.startswith(NON_WEIGHT_PREFIXES)}
    expected = {k for k in model.state_dict() if not k.startswith(NON_WEIGHT_PREFIXES)}
    if set(chosen) != expected:
        raise InputError(f"{path}: the {weights} weights do not fit the model's parameters")
    model.load_state_dict(chosen, strict=False)


def load_state(model: nn.Module, state_dict: dict[str, Any], path: Path) -> None:
    """``state_dict`` (of the checkpoint at ``path``) into ``model``, refused by name and shape
    when it does not fit; non-weight entries (:data:`NON_WEIGHT_PREFIXES`) are left out."""
    weights = {k: v for k, v in state_dict.items() if not k.startswith(NON_WEIGHT_PREFIXES)}
    expected = {k for k in model.state_dict() if not k.startswith(NON_WEIGHT_PREFIXES)}
    missing, unexpected = sorted(expected - weights.keys()), sorted(weights.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit this model ({type(model).__name__}): "
            f"{len(missing)} missing key(s) {missing[:3]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    mismatched = [
        k for k, v in model.state_dict().items() if k in weights and weights[k].shape != v.shape
    ]
    if mismatched:
        raise CheckpointError(f"{path} does not fit this model: shape mismatch in {mismatched[:3]}")
    model.load_state_dict(weights, strict=False)
