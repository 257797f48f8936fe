"""What ``dermlit-train`` returns to Hydra sweepers (``hydra/sweeper=optuna``)."""

from __future__ import annotations

import lightning as L

from dermlit.callbacks.checkpoints import monitored_checkpoint

#: key of the objective in the dict ``dermlit.train.train`` returns
OBJECTIVE = "val/best_monitored"


def best_validation_score(trainer: L.Trainer) -> float | None:
    """The checkpoint callback's best monitored score: ``val/macro_f1`` by default,
    ``val_ema/macro_f1`` with ``callbacks=ema``. Sweepers tune on validation, never on test.
    ``None`` without a checkpoint callback or score (``debug=fdr``): the sweeper's trial fails."""
    score = getattr(monitored_checkpoint(trainer), "best_model_score", None)
    return None if score is None else float(score)
