"""The run's TESTED weights (``test_weights``: best, last or the snapshot ensemble) in a
:class:`DeployableClassifier`."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from dermlit.checkpoints import CheckpointError
from dermlit.errors import InputError
from dermlit.export.deployable import DeployableClassifier
from dermlit.inference.run import RunDecisions
from dermlit.models.ensemble import with_checkpoint_weights
from dermlit.models.from_run import model_for_checkpoint


def run_colour_constancy(config: DictConfig) -> nn.Module | None:
    """The run's ``data.colour_constancy`` (what its image cache applied); None for a run
    without one (written before the option existed, or ``none``)."""
    node = config.get("data", {}).get("colour_constancy")
    return None if node is None else instantiate(node)


def deployable_model(decisions: RunDecisions, device: str = "cpu") -> DeployableClassifier:
    """The run's model with its tested weights (a snapshot ensemble's as one backbone), TTA,
    post-hoc bias and temperature."""
    run_dir = decisions.run_dir
    which = str(decisions.config.get("test_weights", "best"))  # what dermlit-train tested
    try:
        model, _ = with_checkpoint_weights(
            model_for_checkpoint(decisions.config.model), run_dir, which
        )
    except (FileNotFoundError, CheckpointError) as err:
        raise InputError(
            f"{run_dir} has no usable checkpoint for its test_weights={which}: {err}"
        ) from None
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
