"""Two CPU processes (gloo DDP, Lightning's subprocess launcher re-runs this file per rank):
one SAM fit without and one with ``sync_perturbation``; each rank saves its perturbations and
final weights to OUT_DIR. Used by test_ddp.py, not collected by pytest itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch.strategies import DDPStrategy  # noqa: E402

from dermlit.optim import SAM  # noqa: E402
from optim.helpers import classifier, images_and_targets, loader, sgd, trainer  # noqa: E402


class RecordingSAM(SAM):
    """SAM that also writes e(w) = (w + e) - w of every update on every rank."""

    def perturb(self, params, grads):
        saved = super().perturb(params, grads)
        e = [p.detach() - s for p, s in zip(params, saved, strict=True)]
        self.records.append(torch.cat([t.flatten() for t in e]))
        return saved


def main(out_dir: Path) -> None:
    images, targets = images_and_targets(32)
    for sync in (False, True):
        optim = RecordingSAM(optimizer=sgd(), rho=0.5, sync_perturbation=sync)
        optim.records = []
        model = classifier(optim)
        strategy = DDPStrategy(process_group_backend="gloo")
        t = trainer(max_epochs=1, devices=2, strategy=strategy)
        t.fit(model, loader(images, targets, batch_size=4))
        rank = t.global_rank
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(
            {"e": torch.stack(optim.records), "weights": weights, "steps": t.global_step},
            out_dir / f"sync{int(sync)}_rank{rank}.pt",
        )
        os.environ["LOCAL_RANK"] = str(t.local_rank)  # the 2nd fit reuses these processes


if __name__ == "__main__":
    main(Path(sys.argv[1]))
