"""The callback through which :class:`dermlit.status.RunStatus` follows the trainer; its own
module so that reading or refusing a run (``dermlit.status``) imports no Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING

import lightning as L

if TYPE_CHECKING:
    from dermlit.status import RunStatus


class StatusProgress(L.Callback):
    """Hands the trainer to ``status`` (its step and epoch go into status.json) and rewrites
    ``running`` at each epoch's end."""

    def __init__(self, status: RunStatus) -> None:
        self.status = status

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.status.trainer = trainer

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.status.write("running")
