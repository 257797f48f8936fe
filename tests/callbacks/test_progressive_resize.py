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

from dermlit.callbacks.progressive_resize import ProgressiveResize, stage_size
from dermlit.models.classifier import downsampled
from dermlit.optim import Optimization
from tests.tiny_run import TINY_RUN


def test_stages_split_the_epochs_equally() -> None:
    # by hand: 54 epochs, 3 sizes -> 18 epochs each; 51 -> 17 each; 4 -> epoch * 3 // 4
    assert [stage_size([48, 64, 80], e, 54) for e in (0, 17, 18, 35, 36, 53)] == [
        48,
        48,
        64,
        64,
        80,
        80,
    ]
    assert [stage_size([48, 64, 80], e, 51) for e in (16, 17, 33, 34)] == [48, 64, 64, 80]
    assert [stage_size([8, 16, 32], e, 4) for e in range(4)] == [8, 8, 16, 32]
    # past max_epochs (an extended run's old epochs never come back, but no index error)
    assert stage_size([8, 16], 9, 4) == 16


def test_downsampling_matches_pil_antialiased_bilinear() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    ours = downsampled(x, 32)
    assert ours.shape == (1, 3, 32, 24)  # the longer side at 32, the aspect kept
    theirs = np.asarray(Image.fromarray(image).resize((24, 32), Image.BILINEAR)) / 255.0
    ours_hwc = ours[0].permute(1, 2, 0).numpy()
    # PIL resamples in fixed point and rounds to uint8: within one grey level, mostly closer
    diff = np.abs(ours_hwc - theirs)
    assert diff.max() <= 1.5 / 255 and diff.mean() < 0.3 / 255
    assert downsampled(x, None) is x and downsampled(x, 64) is x
    with pytest.raises(ValueError, match="above the cached 64x48: raise data.image_size"):
        downsampled(x, 80)


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
    fit = trainer(max_epochs=3, callbacks=[ProgressiveResize([8, 12, 16]), sizes])
    fit.fit(model, loader(images, targets), loader(images, targets))
    assert sizes.train == {0: {8}, 1: {12}, 2: {16}}
    assert sizes.val == {16}
    assert model.train_image_size is None  # after fit: predict and test at the cache's size


def test_sizes_are_checked() -> None:
    with pytest.raises(ValueError, match=r"sizes \[64, 48\] must not shrink"):
        ProgressiveResize([64, 48])
    with pytest.raises(ValueError, match="must be positive"):
        ProgressiveResize([])


def test_a_run_trains_in_stages_and_refuses_a_last_size_off_the_cache(
    tmp_path: Path, train_in_process
) -> None:
    run = [*TINY_RUN, "bootstrap_resamples=20", "resize=progressive", "trainer.max_epochs=3"]
    cfg, metrics = train_in_process(
        tmp_path / "run", *run, "callbacks.progressive_resize.sizes=[16,24,32]"
    )
    log = pd.read_csv(tmp_path / "run" / "csv" / "metrics.csv")
    logged = log.dropna(subset=["train/image_size"]).sort_values("epoch")
    assert logged["train/image_size"].tolist() == [16.0, 24.0, 32.0]
    assert "test/macro_f1" in metrics
    assert (tmp_path / "run" / "checkpoints").is_dir()
    with pytest.raises(ValueError, match="end at 24 px, but data.image_size is 32"):
        train_in_process(tmp_path / "bad", *run, "callbacks.progressive_resize.sizes=[16,24]")
