"""Two CPU processes (gloo DDP): rank 0 alone gets a NaN loss (with a finite gradient) at its
batch 1. Each rank writes what it raised to OUT_DIR/rank{r}.json. Used by
test_nonfinite_loss_ddp.py, not collected by pytest itself."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch.callbacks import Callback  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy  # noqa: E402
from optim.helpers import TinyMLP, classifier, images_and_targets, loader, sgd, trainer  # noqa: E402

from dermlit.optim import UpdateRule  # noqa: E402


class Batch(Callback):
    def __init__(self) -> None:
        self.idx, self.rank = -1, -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.idx, self.rank = batch_idx, trainer.global_rank


class NanOnRankZero(nn.Module):
    def __init__(self, where: Batch) -> None:
        super().__init__()
        self.where = where

    def forward(self, logits, targets):
        loss = nn.functional.cross_entropy(logits, targets)
        return loss + math.nan if (self.where.rank, self.where.idx) == (0, 1) else loss


def main(out_dir: Path) -> None:
    images, targets = images_and_targets(32)
    where = Batch()
    model = classifier(UpdateRule(optimizer=sgd()), backbone=TinyMLP())
    model.criterion = NanOnRankZero(where)
    t = trainer(devices=2, strategy=DDPStrategy(process_group_backend="gloo"), callbacks=[where])
    try:
        t.fit(model, loader(images, targets, batch_size=4))
        result = {"raised": None}
    except FloatingPointError as err:
        result = {"raised": str(err)}
    result |= {
        "global_step": t.global_step,
        "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
    }
    (out_dir / f"rank{t.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
