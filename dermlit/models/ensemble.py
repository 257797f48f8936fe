"""A snapshot ensemble (Huang et al. 2017): one run's snapshots, each taken at the end of a cycle
of a restarting LR schedule, predicting together.

The members' softmax probabilities are averaged and returned as log-probabilities, which the
rest of the pipeline treats as logits, as for TTA (:func:`dermlit.models.tta.mean_probability_logits`);
TTA over the ensemble then averages over views and members with equal weights. The ensemble is
a backbone, so every route that takes a ``DermClassifier`` takes it: ``predict_split``, AdaBN,
Grad-CAM (one map over every member's layer) and the deployable/ONNX export.

Neither Lightning nor timm has this: timm's ``--model-ema`` and Lightning's ``WeightAveraging``
average WEIGHTS (one model), which is not the same function for networks that are not in one
linear basin; torch's ``AveragedModel`` likewise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from dermlit.checkpoints import SNAPSHOTS, load_model_weights, resolve_checkpoints
from dermlit.models.copies import detached_copy
from dermlit.models.tta import mean_probability_logits


class SnapshotEnsemble(nn.Module):
    """``members`` (backbones of one architecture) -> log of their mean softmax."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a snapshot ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return mean_probability_logits([member(x) for member in self.members])


def snapshot_ensemble(model: nn.Module, paths: Sequence[Path], weights: str = "default"):
    """A copy of the classifier ``model`` whose backbone is the ensemble of the checkpoints at
    ``paths`` (``weights``: each one's default, raw or EMA weights, :data:`dermlit.checkpoints.WEIGHTS`).
    ``model`` itself is left as it is."""
    members = []
    for path in paths:
        member = detached_copy(model)
        load_model_weights(member, Path(path), weights)
        members.append(member.backbone)
    return detached_copy(model, backbone=SnapshotEnsemble(members))


def with_checkpoint_weights(model, run_dir: Path, which: str, weights: str = "default"):
    """``model`` with the ``weights`` of the run's checkpoint ``which`` (best, last, a path) loaded,
    or for ``snapshots`` a copy that is the ensemble of every snapshot; and the files read. The
    one way a run's weights are rebuilt outside its training (dermlit-eval, predict, export)."""
    paths = resolve_checkpoints(Path(run_dir), which)
    if which == SNAPSHOTS:
        return snapshot_ensemble(model, paths, weights), paths
    load_model_weights(model, paths[0], weights)
    return model, paths
