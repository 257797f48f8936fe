"""Preemption-safe training: checkpoint on a signal at a step boundary, resume mid-epoch exactly.

What Lightning lacks:

- Its SLURM handler (``SLURMEnvironment(auto_requeue=True)``) saves the checkpoint INSIDE the
  signal handler, i.e. wherever the main thread happens to be: in the middle of a SAM step the
  weights are perturbed (w + e(w)) and the optimizer half-stepped. Outside SLURM it saves nothing
  on SIGUSR1, and on SIGTERM it stops without a checkpoint. :class:`PreemptionCheckpoint` only
  records the signal; at the end of the current training step (all ranks agreeing) it saves
  ``RUN_DIR/hpc_ckpt_N.ckpt`` (Lightning's own name, so a requeued SLURM job resumes from it with
  ``ckpt_path=None``), requeues the SLURM job and exits. It installs its handlers before
  Lightning registers its own, so Lightning leaves SIGUSR1 to it (it only takes a free signal).
  It saves from ``on_train_batch_end`` behind EVERY other callback (it moves itself to the end
  of ``trainer.callbacks`` at ``on_fit_start``, after the set-up in which
  :class:`~dermlit.callbacks.checkpoints.LastCheckpoint` moves itself last): hooks run in list
  order and Lightning moves only ``Checkpoint`` subclasses to the end, so in the config's order
  (``preemption`` before ``ema``) the checkpoint was written before the EMA had averaged that
  step in, and a resumed run, whose EMA updates only at a ``global_step`` past the saved one,
  never averaged it: one EMA update short of an uninterrupted run.
- On resume from a mid-epoch checkpoint Lightning re-iterates a plain ``DataLoader`` from the
  start of the epoch while counting the batches already done: the first ``k`` batches are seen
  twice and the last ``k`` never. :class:`ResumeSamplerPosition` makes the epoch-seeded sampler
  skip exactly the ``k`` batches done. It also sets the sampler's epoch before the first
  iteration (with ``num_workers > 0`` Lightning draws the resumed epoch's first indices before
  it calls ``set_epoch``, i.e. from epoch 0's stream). Lightning then still warns that "your
  dataloader is not resumable" (it checks only whether the DataLoader itself has
  ``state_dict``/``load_state_dict``); where the position has been restored that warning is
  untrue, so it is silenced (for the rest of the process) and replaced by a log line saying
  what was done.
  Without this callback (``callbacks=none``) the warning stays, and is true.

The process exits with :data:`dermlit.exit_codes.EXIT_PREEMPTED` (75, ``EX_TEMPFAIL``: "try
again"), not 0: a job script can tell a preempted run from a completed (0) or failed (1) one.
SLURM's requeue does not depend on it: ``scontrol requeue`` is issued before the exit.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import threading
import warnings
from collections.abc import Sequence
from types import FrameType

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback

from dermlit.data.samplers import EpochSampler
from dermlit.exit_codes import EXIT_PREEMPTED, Preempted
from dermlit.run_lock import slurm_job_id

log = logging.getLogger(__name__)

#: Lightning's warning (training_epoch_loop.reset) that ResumeSamplerPosition makes untrue
NOT_RESUMABLE_WARNING = r"You're resuming from a checkpoint that ended before the epoch ended"

__all__ = ["Preempted", "PreemptionCheckpoint", "ResumeSamplerPosition", "slurm_job_id"]


class PreemptionCheckpoint(Callback):
    """On one of ``signals``: finish the step, save ``hpc_ckpt_N.ckpt`` into the run directory
    (``trainer.default_root_dir``), requeue the SLURM job (``requeue``, when in one), exit with
    ``exit_code``. ``dermlit-train resume=RUN_DIR`` and a requeued SLURM job resume from it."""

    def __init__(
        self,
        signals: Sequence[str] = ("SIGUSR1", "SIGTERM"),
        requeue: bool = True,
        exit_code: int = EXIT_PREEMPTED,
    ) -> None:
        unknown = [s for s in signals if s not in signal.Signals.__members__]
        if unknown:
            raise ValueError(f"unknown signal name(s) {unknown}; e.g. SIGUSR1, SIGUSR2, SIGTERM")
        self.signals = [signal.Signals[s] for s in signals]
        self.requeue = requeue
        self.exit_code = exit_code
        self.received: signal.Signals | None = None
        self.saved_path: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)
        log.warning("Received %s: checkpointing at the end of this training step", self.received)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # before Lightning's signal connector (Trainer._run), which keeps a handler it finds
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self.received = None
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handler)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # behind every other callback's on_train_batch_end (the EMA's update of this step, a
        # step-interval ModelCheckpoint): after every set-up, so after LastCheckpoint's move
        # (a new list: this hook is being called from a loop over the current one)
        trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self] + [self]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        # one collective per step: a signal may reach only some ranks
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        path = trainer.strategy.broadcast(
            trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        )
        trainer.save_checkpoint(path)
        self.saved_path = path
        log.warning("Preemption checkpoint saved: %s", path)
        job_id = slurm_job_id() if self.requeue and SLURMEnvironment.detect() else None
        if job_id is not None and trainer.is_global_zero:
            assert re.fullmatch(r"[0-9_]+", job_id), job_id
            try:
                result = subprocess.call(["scontrol", "requeue", job_id])
                log.warning("scontrol requeue %s: exit code %d", job_id, result)
            except OSError as err:  # the checkpoint is there: resume=RUN_DIR still works
                log.error("could not requeue SLURM job %s: %s", job_id, err)
        raise Preempted(self.exit_code, checkpoint=str(path))


class ResumeSamplerPosition(Callback):
    """Continue an :class:`~dermlit.data.samplers.EpochSampler`'s stream exactly where a
    checkpoint left it: the restored epoch, minus the batches of it already trained on."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if trainer.ckpt_path is None or not isinstance(sampler, EpochSampler):
            return
        fit_loop = trainer.fit_loop
        # batches of the interrupted epoch already done (= Lightning's count after its reset)
        done = fit_loop.epoch_loop.batch_progress.current.processed if fit_loop.restarting else 0
        if 0 < done < trainer.num_training_batches:
            sampler.skip_next(done * loader.batch_size)
        elif sampler.epoch == trainer.current_epoch:
            return
        sampler.set_epoch(trainer.current_epoch)
        # the iterator made before this hook may already hold indices drawn by worker prefetch
        iter(fit_loop._data_fetcher)
        if done:
            # printed by the epoch loop right after this hook; untrue now (module docstring)
            warnings.filterwarnings("ignore", message=NOT_RESUMABLE_WARNING)
            log.info(
                "Resuming epoch %d after %d batches: the sampler skips the %d batches already "
                "trained on (Lightning's warning that the dataloader is not resumable does not "
                "apply, the position is restored by ResumeSamplerPosition)",
                trainer.current_epoch,
                done,
                done,
            )
        else:
            log.info("Resuming at the start of epoch %d", trainer.current_epoch)
