"""Training throughput and peak memory of a recipe through the real config (e.g. on a GPU).

    python benchmarks/train_throughput.py experiment=ham10000_gpu --steps 300
    python benchmarks/train_throughput.py experiment=ham10000_gpu optim=adamw callbacks=default
    python benchmarks/train_throughput.py experiment=ham10000_cpu --steps 20   # CPU check
    python benchmarks/train_throughput.py experiment=ham10000_cpu --compile    # torch.compile

Composes ``conf/train.yaml`` with the given overrides, trains ``--steps`` optimizer steps (no
validation, no checkpoints) and prints images per second over the steps after ``--warmup`` and
the peak GPU memory. The config's callbacks that change the training computation (EMA) are
kept; bookkeeping ones (checkpointing, progress bar, LR monitor) are dropped.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from dermlit.config import CONF_DIR, register_resolvers
from dermlit.train import instantiate_dict

#: callbacks that only record or display, left out of the timed fit
BOOKKEEPING = (L.pytorch.callbacks.Checkpoint, L.pytorch.callbacks.ProgressBar)
BOOKKEEPING += (L.pytorch.callbacks.LearningRateMonitor,)


class StepTimer(L.Callback):
    """Wall time of each training batch (CUDA-synchronised), skipping the warm-up steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.images, self._start = warmup, [], 0, 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._start)
            self.images += len(batch[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=ham10000_gpu"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    args = parser.parse_args()
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=args.overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.run_dir = "outputs/benchmarks/train_throughput"
    L.seed_everything(cfg.seed)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    if args.compile:
        model.backbone = torch.compile(model.backbone)
    timer = StepTimer(min(args.warmup, args.steps // 2))
    kept = [c for c in instantiate_dict(cfg.get("callbacks")) if not isinstance(c, BOOKKEEPING)]
    trainer = instantiate(
        cfg.trainer,
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[timer, *kept],
        enable_progress_bar=False,
        strategy="auto",
        devices=1,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=datamodule)
    seconds = sum(timer.times)
    print(f"config: {' '.join(args.overrides)}{' --compile' if args.compile else ''}")
    print(f"callbacks timed with: {[type(c).__name__ for c in kept] or 'none'}")
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    print(f"steps timed: {len(timer.times)} (after {timer.warmup} warm-up)")
    print(f"images/s: {timer.images / seconds:.0f}")
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
