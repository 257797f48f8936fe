"""Progressive resizing: the stage schedule against a hand-worked table, the downsampling against
PIL's antialiased bilinear resize, the sizes the backbone really sees in a fit, a full
``dermlit-train resize=progressive`` run, and the error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from optim.helpers import classifier, images_and_targets, loader, sgd, trainer
from PIL import Image

from dermlit.callbacks.progressive_resize import ProgressiveResize, stage_scale
from dermlit.models.classifier import downsampled
from dermlit.optim import Optimization
from tests.tiny_run import TINY_RUN


def test_stages_split_the_epochs_equally() -> None:
    # by hand: 54 epochs, 3 scales -> 18 epochs each; 51 -> 17 each; 4 -> epoch * 3 // 4
    scales = [0.6, 0.8, 1.0]
    assert [stage_scale(scales, e, 54) for e in (0, 17, 18, 35, 36, 53)] == [
        0.6,
        0.6,
        0.8,
        0.8,
        1.0,
        1.0,
    ]
    assert [stage_scale(scales, e, 51) for e in (16, 17, 33, 34)] == [0.6, 0.8, 0.8, 1.0]
    assert [stage_scale([0.25, 0.5, 1.0], e, 4) for e in range(4)] == [0.25, 0.25, 0.5, 1.0]
    # past max_epochs (an extended run's old epochs never come back, but no index error)
    assert stage_scale([0.5, 1.0], 9, 4) == 1.0


def test_downsampling_matches_pil_antialiased_bilinear() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    ours = downsampled(x, 0.5)
    assert ours.shape == (1, 3, 32, 24)  # the longer side at 32, the aspect kept
    theirs = np.asarray(Image.fromarray(image).resize((24, 32), Image.BILINEAR)) / 255.0
    ours_hwc = ours[0].permute(1, 2, 0).numpy()
    # PIL resamples in fixed point and rounds to uint8: within one grey level, mostly closer
    diff = np.abs(ours_hwc - theirs)
    assert diff.max() <= 1.5 / 255 and diff.mean() < 0.3 / 255
    assert downsampled(x, None) is x and downsampled(x, 1.0) is x
    assert downsampled(x, 0.75).shape == (1, 3, 48, 36)  # 80 px x 0.6 = 48 px, as in the recipe
    with pytest.raises(ValueError, match="scale 1.25 is outside"):
        downsampled(x, 1.25)


class InputSizes(Callback):
    """The side of the batches the backbone is given, per epoch, in training and validation."""

    def __init__(self) -> None:
        self.train: dict[int, set[int]] = {}
        self.val: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train.setdefault(trainer.current_epoch, set()).add(batch[0].shape[-1])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self.val.add(batch[0].shape[-1])


def test_the_backbone_trains_at_the_stage_size_and_validates_at_the_cache_size() -> None:
    images, targets = images_and_targets(16, size=16)
    sizes = InputSizes()
    model = classifier(Optimization(optimizer=sgd()))
    fit = trainer(max_epochs=3, callbacks=[ProgressiveResize([0.5, 0.75, 1.0]), sizes])
    fit.fit(model, loader(images, targets), loader(images, targets))
    assert sizes.train == {0: {8}, 1: {12}, 2: {16}}
    assert sizes.val == {16}
    assert model.train_image_scale is None  # after fit: predict and test at the cache's size


def test_scales_are_checked() -> None:
    with pytest.raises(ValueError, match=r"scales \[0.8, 0.6, 1.0\] must grow and end at 1.0"):
        ProgressiveResize([0.8, 0.6, 1.0])
    with pytest.raises(ValueError, match=r"scales \[0.5, 0.8\] must grow and end at 1.0"):
        ProgressiveResize([0.5, 0.8])
    with pytest.raises(ValueError, match="must be in \\(0, 1\\]"):
        ProgressiveResize([0.5, 1.5])
    with pytest.raises(ValueError, match="must be in"):
        ProgressiveResize([])


@pytest.mark.parametrize("max_epochs", [-1, None])
def test_a_run_without_an_epoch_count_is_refused(max_epochs) -> None:
    """max_epochs=-1 (train by steps) was read as a 1-epoch run: every epoch after the first
    trained at the last stage."""
    from types import SimpleNamespace

    from dermlit.errors import InputError

    expected = rf"splits trainer.max_epochs into 3 stages, but trainer.max_epochs is {max_epochs}:"
    with pytest.raises(InputError, match=expected):
        ProgressiveResize([0.5, 0.75, 1.0]).on_fit_start(
            SimpleNamespace(max_epochs=max_epochs), None
        )
    ProgressiveResize([0.5, 1.0]).on_fit_start(SimpleNamespace(max_epochs=4), None)


def test_a_run_trains_in_stages(tmp_path: Path, train_in_process) -> None:
    run = [*TINY_RUN, "bootstrap_resamples=20", "resize=progressive", "trainer.max_epochs=3"]
    cfg, metrics = train_in_process(tmp_path / "run", *run)
    assert list(cfg.callbacks.progressive_resize.scales) == [0.6, 0.8, 1.0]
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    logged = log.dropna(subset=["train/image_scale"]).sort_values("epoch")
    # logged as float32 tensors
    np.testing.assert_allclose(logged["train/image_scale"], [0.6, 0.8, 1.0], rtol=1e-6)
    assert "test/macro_f1" in metrics
    assert any((tmp_path / "run" / "checkpoints").glob("best-epoch*.ckpt"))
