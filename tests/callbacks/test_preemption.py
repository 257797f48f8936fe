"""A real signal mid-epoch -> checkpoint at the step boundary -> resume: the same sample stream
and the same final weights as an uninterrupted run (in-process, a tiny model, seconds)."""

from __future__ import annotations

import os
import signal

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Checkpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dermlit.callbacks.checkpoints import LastCheckpoint
from dermlit.callbacks.ema import EMA
from dermlit.callbacks.preemption import Preempted, PreemptionCheckpoint, ResumeSamplerPosition
from dermlit.config import compose_config
from dermlit.data.samplers import WeightedClassSampler

N, BATCH = 60, 8  # 8 batches per epoch, the last one of 4


class Tiny(L.LightningModule):
    """Records the dataset indices of every training batch, in order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        self.seen += idx.tolist()
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loader(num_workers: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 5, generator=g)
    y = torch.tensor([0] * 40 + [1] * 15 + [2] * 5)
    sampler = WeightedClassSampler(y, power=0.5, stratified=True, seed=3)
    ds = TensorDataset(x, y, torch.arange(N))
    return DataLoader(
        ds, batch_size=BATCH, sampler=sampler, num_workers=num_workers, persistent_workers=False
    )


class SignalAtStep(L.Callback):
    """Sends ``signum`` to this process when training step ``step`` starts (a real signal)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.trainer = trainer
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def fit(
    root, callbacks, ckpt_path=None, num_workers=0, model=None, plugins=None
) -> tuple[Tiny, L.Trainer]:
    model = model or Tiny()
    trainer = L.Trainer(
        default_root_dir=root,
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        plugins=plugins,
        callbacks=callbacks,
    )
    trainer.fit(model, loader(num_workers), ckpt_path=ckpt_path)
    return model, trainer


STEP = 11  # the signal arrives in step 11: epoch 1, its 4th batch
DONE = N + 4 * BATCH  # samples trained on when the checkpoint is written


def interrupted(root, signum, resume_callbacks, num_workers=0):
    """Train until ``signum`` arrives in step STEP, then resume from the preemption checkpoint.
    Returns the indices trained on before and after, and the resumed model and trainer."""
    first, preemption = Tiny(), PreemptionCheckpoint()
    with pytest.raises(Preempted):
        fit(root, [preemption, SignalAtStep(STEP, signum)], num_workers=num_workers, model=first)
    assert preemption.received == signal.Signals(signum)
    ckpt = root / "hpc_ckpt_1.ckpt"  # Lightning's HPC name, in default_root_dir
    assert preemption.saved_path == str(ckpt) and ckpt.is_file()
    saved = torch.load(ckpt, weights_only=False)
    # written at the end of the step in which the signal arrived
    assert (saved["global_step"], saved["epoch"]) == (STEP + 1, 1)
    assert len(first.seen) == DONE
    resumed, trainer = fit(root, resume_callbacks, ckpt, num_workers)
    return first.seen, resumed, trainer


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_mid_epoch_resumes_the_same_stream_and_weights(tmp_path, signum) -> None:
    whole, _ = fit(tmp_path / "whole", [])
    assert len(whole.seen) == 3 * N
    before, resumed, trainer = interrupted(tmp_path / "part", signum, [ResumeSamplerPosition()])
    # no sample of the interrupted epoch seen twice or skipped
    assert before + resumed.seen == whole.seen
    assert trainer.global_step == 3 * 8
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_without_position_restore_lightning_repeats_the_epoch_head(tmp_path) -> None:
    """Why ResumeSamplerPosition exists: Lightning re-iterates a plain DataLoader from the
    epoch's start but counts the batches done, so the first k batches repeat, the last k vanish."""
    whole, _ = fit(tmp_path / "whole", [])
    before, resumed, _ = interrupted(tmp_path / "part", signal.SIGUSR1, [])
    head = 4 * BATCH
    assert before == whole.seen[:DONE]
    epoch1 = whole.seen[N : 2 * N]
    # the 4 batches left of epoch 1 are its first 4 again; its last 28 samples are never seen
    assert resumed.seen[:head] == epoch1[:head] == before[N:]
    assert resumed.seen[head:] == whole.seen[2 * N :]  # epoch 2 as it should be
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(whole.parameters(), resumed.parameters(), strict=True)
    )
    assert diff > 1e-4


def test_epoch_restored_before_worker_prefetch(tmp_path) -> None:
    """With num_workers > 0 Lightning draws the resumed epoch's first indices before calling
    set_epoch, i.e. from epoch 0's stream; the callback re-draws them from the restored epoch."""
    whole, _ = fit(tmp_path / "whole", [], num_workers=1)
    before, resumed, _ = interrupted(
        tmp_path / "part", signal.SIGUSR1, [ResumeSamplerPosition()], num_workers=1
    )
    assert before + resumed.seen == whole.seen


def config_callbacks(run_dir) -> list[L.Callback]:
    """``callbacks=ema`` as ``dermlit-train`` builds it, in the config's order (preemption
    before ema), less what this module-only fit cannot have (a progress bar, a logger's LR
    monitor, a validation monitor: ``Tiny`` has no validation loop)."""
    cfg = compose_config(
        "train",
        [
            "callbacks=ema",
            f"paths.run_dir={run_dir}",
            "callbacks.model_checkpoint.monitor=null",
            "~callbacks.progress_bar",
            "~callbacks.lr_monitor",
        ],
    )
    names = list(cfg.callbacks)
    assert names.index("preemption") < names.index("ema")  # the order that lost an update
    return [instantiate(cfg.callbacks[name]) for name in names]


def ema_of(callbacks) -> EMA:
    return next(c for c in callbacks if isinstance(c, EMA))


def test_preemption_checkpoint_holds_the_ema_update_of_its_step(tmp_path) -> None:
    """The checkpoint is written after EVERY callback's on_train_batch_end: with the config's
    order the EMA had not averaged the step in yet, and the resumed EMA (which updates only at
    a global_step past the saved one) never did: one update short, weights off by ~1e-2."""
    whole_callbacks = config_callbacks(tmp_path / "whole")
    fit(tmp_path / "whole", whole_callbacks)
    whole = ema_of(whole_callbacks)
    assert whole.n_updates == 3 * 8

    root = tmp_path / "part"
    part = config_callbacks(root)
    preemption = next(c for c in part if isinstance(c, PreemptionCheckpoint))
    signal_at_step = SignalAtStep(STEP, signal.SIGUSR1)
    with pytest.raises(Preempted):
        fit(root, [*part, signal_at_step])
    saved = torch.load(root / "hpc_ckpt_1.ckpt", weights_only=False)
    assert saved["global_step"] == STEP + 1
    assert int(saved["averaging_state"]["n_averaged"]) == STEP + 1
    assert saved["callbacks"]["EMA"] == {"latest_update_step": STEP + 1}

    resumed_callbacks = config_callbacks(root)
    _, trainer = fit(root, resumed_callbacks, ckpt_path=root / "hpc_ckpt_1.ckpt")
    resumed = ema_of(resumed_callbacks)
    assert trainer.global_step == 3 * 8
    assert resumed.n_updates == whole.n_updates
    a, b = whole._average_model, resumed._average_model
    assert int(a.n_averaged) == int(b.n_averaged)
    for x, y in zip(a.module.parameters(), b.module.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    # the last.ckpt of both: the same EMA (exported) weights
    w = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=False)
    r = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)
    for key, value in w["state_dict"].items():
        torch.testing.assert_close(value, r["state_dict"][key], rtol=0, atol=1e-6)

    # moved behind everything, LastCheckpoint (which puts itself last at set-up) included
    order = signal_at_step.trainer.callbacks
    assert order[-1] is preemption
    assert order.index(ema_of(part)) < order.index(preemption)
    assert isinstance(order[-2], LastCheckpoint)


def test_unknown_signal_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown signal name"):
        PreemptionCheckpoint(signals=["SIGNOPE"])
