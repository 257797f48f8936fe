"""``trainer.precision=64-true`` with ``callbacks=ema``: Lightning's WeightAveraging copies the
module before the precision plugin makes it double; the average must follow (it crashed in the
foreach lerp, float vs double), stay exact in double, and survive a checkpoint and a resume."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from optim.helpers import classifier, images_and_targets, loader, sgd, trainer

from dermlit.callbacks import EMA
from dermlit.optim import SAM


class WeightRecorder(Callback):
    def __init__(self) -> None:
        self.weights: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights.append([p.detach().clone() for p in pl_module.parameters()])


def fit(tmp_path: Path, epochs: int, ckpt_path: Path | None = None):
    images, targets = images_and_targets(24)  # 3 steps per epoch
    ema, recorder = EMA(decay=0.5, warmup=False, export="raw"), WeightRecorder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    model = classifier(SAM(optimizer=sgd(lr=0.5)))
    t = trainer(
        max_epochs=epochs,
        precision="64-true",
        callbacks=[recorder, ema, checkpoint],
        enable_checkpointing=True,
    )
    t.fit(model, loader(images, targets), loader(images, targets), ckpt_path=ckpt_path)
    return model, ema, recorder


def test_one_epoch_at_64_true_with_ema_is_an_exact_double_average(tmp_path: Path) -> None:
    model, ema, recorder = fit(tmp_path, epochs=1)
    assert ema.n_updates == 3
    average = list(ema._average_model.module.parameters())
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(a.dtype == torch.float64 for a in average)
    expected = recorder.weights[0]  # the first update copies; then e <- 0.5 e + 0.5 w
    for weights in recorder.weights[1:]:
        expected = [0.5 * e + 0.5 * w for e, w in zip(expected, weights, strict=True)]
    for ours, ref in zip(average, expected, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)  # double, not float
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    key = "backbone.conv.weight"
    assert ckpt["ema_state_dict"][key].dtype == torch.float64
    torch.testing.assert_close(
        ckpt["ema_state_dict"][key], ema._average_model.module.state_dict()[key]
    )


def test_resuming_a_64_true_ema_run_continues_the_average(tmp_path: Path) -> None:
    fit(tmp_path, epochs=1)
    first = torch.load(tmp_path / "last.ckpt", weights_only=False)
    model, ema, _ = fit(tmp_path, epochs=2, ckpt_path=tmp_path / "last.ckpt")
    assert ema.n_updates == 6  # 3 restored + 3 new
    assert all(a.dtype == torch.float64 for a in ema._average_model.module.parameters())
    second = torch.load(tmp_path / "last.ckpt", weights_only=False)
    key = "backbone.conv.weight"
    assert second["epoch"] == 1 and second["ema_state_dict"][key].dtype == torch.float64
    assert not torch.allclose(second["ema_state_dict"][key], first["ema_state_dict"][key])
