"""The run's TESTED weights (``test_weights``: best, last or the snapshot ensemble) in a
:class:`DeployableClassifier`."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dermlit.checkpoints import SNAPSHOTS, CheckpointError, load_model_weights, resolve_checkpoints
from dermlit.errors import InputError
from dermlit.export.deployable import DeployableClassifier
from dermlit.inference.run import RunDecisions
from dermlit.models.ensemble import snapshot_ensemble
from dermlit.models.from_run import model_for_checkpoint


def tested_checkpoints(decisions: RunDecisions) -> list[Path]:
    """The checkpoint(s) ``dermlit-train`` tested: ``test_weights`` of the run's config (every
    snapshot for ``snapshots``)."""
    run_dir = decisions.run_dir
    which = str(decisions.config.get("test_weights", "best"))
    try:
        return resolve_checkpoints(run_dir, which)
    except (FileNotFoundError, CheckpointError) as err:
        raise InputError(
            f"{run_dir} has no usable checkpoint for its test_weights={which} ({err}); a run "
            "trained with debug=fdr keeps none: train it without fast_dev_run"
        ) from None


def run_colour_constancy(config: DictConfig) -> nn.Module | None:
    """The run's ``data.colour_constancy`` (what its image cache applied); None for a run
    without one (written before the option existed, or ``none``)."""
    node = config.get("data", {}).get("colour_constancy")
    return None if node is None else instantiate(node)


def deployable_model(decisions: RunDecisions, device: str = "cpu") -> DeployableClassifier:
    """The run's model with its tested weights (a snapshot ensemble's as one backbone), TTA,
    post-hoc bias and temperature."""
    model = model_for_checkpoint(decisions.config.model)
    paths = tested_checkpoints(decisions)
    try:
        if str(decisions.config.get("test_weights")) == SNAPSHOTS:
            model = snapshot_ensemble(model, paths)
        else:
            load_model_weights(model, paths[0])
    except ValueError as err:
        raise InputError(str(err)) from None
    deployable = DeployableClassifier.from_classifier(
        model,
        decisions.image_size,
        decisions.temperature,
        decisions.logit_bias.tolist(),
        run_colour_constancy(decisions.config),
    )
    return deployable.to(torch.device(device))
