"""``checkpoints/last.ckpt`` = the newest epoch end, always.

Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only in
a step in which it also saved a top-k checkpoint (``on_train_epoch_end``/``on_validation_end``:
``if self._last_global_step_saved == trainer.global_step``), i.e. when the monitored metric
improved: once validation stops improving, ``last.ckpt`` stays a copy of the best epoch, and
``test_weights=last``, ``dermlit-eval checkpoint=last`` and every resume restart from there.
:class:`LastCheckpoint` is a second, monitor-less ModelCheckpoint that keeps exactly one file,
``last.ckpt``, rewritten at every epoch end (version counter off, so a resumed run overwrites it
instead of writing ``last-v1.ckpt``).

It moves itself behind every other callback at set-up, so that the state it saves records the
monitored checkpoint's ``best_model_path`` of the SAME epoch: that record is how
``dermlit-eval checkpoint=best`` finds the run's best file (:mod:`dermlit.checkpoints`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from dermlit.checkpoints import SNAPSHOT_PREFIX


class LastCheckpoint(ModelCheckpoint):
    """``dirpath/last.ckpt`` at the end of every ``every_n_epochs``-th epoch."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=every_n_epochs,
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )

    @property
    def path(self) -> str:
        """The file written last ("" before the first epoch end)."""
        return self.best_model_path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # hooks run in list order: behind the monitored checkpoint, our state records its best
        # (a new list: this hook is being called from a loop over the current one)
        trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self] + [self]


class SnapshotCheckpoint(ModelCheckpoint):
    """``dirpath/snapshot-epochNN.ckpt`` at the end of every ``every_n_epochs``-th epoch, all of
    them kept: the members of a snapshot ensemble (Huang et al. 2017, "train 1, get M for free")
    when ``every_n_epochs`` is the cycle of a restarting LR schedule
    (``conf/optim/adamw_restarts.yaml``), each snapshot taken where the cycle's LR is lowest.

    Lightning's ModelCheckpoint does the saving (every weight set of the run's layout, the EMA
    included); this subclass fixes the file names that ``test_weights=snapshots`` and
    ``dermlit-eval checkpoint=snapshots`` read (:func:`dermlit.checkpoints.resolve_snapshots`)
    and is never taken for the run's monitored checkpoint."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int) -> None:
        if int(every_n_epochs) < 1:
            raise ValueError(
                f"snapshot every_n_epochs must be >= 1 (the LR cycle in epochs), got "
                f"{every_n_epochs}"
            )
        super().__init__(
            dirpath=dirpath,
            filename=SNAPSHOT_PREFIX + "{epoch:02d}",
            monitor=None,
            save_top_k=-1,
            save_last=False,
            every_n_epochs=int(every_n_epochs),
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )


def monitored_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best epoch (``callbacks.model_checkpoint``)."""
    found = [
        cb
        for cb in trainer.checkpoint_callbacks
        if not isinstance(cb, LastCheckpoint | SnapshotCheckpoint)
    ]
    return found[0] if found and isinstance(found[0], ModelCheckpoint) else None


def last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """``last.ckpt`` as written by :class:`LastCheckpoint`, else Lightning's ``save_last`` one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, LastCheckpoint) and callback.path:
            return callback.path
    best = monitored_checkpoint(trainer)
    return (best.last_model_path or None) if best is not None else None
