"""Time per training step of AdamW, SAM, ASAM, LookSAM(k=5), ImbSAM and EMA on/off, measured
side by side: same model, batch and machine, the configurations interleaved round by round.

    python benchmarks/optim_overhead.py                         # CPU, resnet18 at 32 px, < 3 min
    python benchmarks/optim_overhead.py --accelerator gpu --image-size 224 --batch-size 64 \\
        --precision bf16-mixed --rounds 5                       # the GPU figures

A step is timed from ``on_train_batch_start`` to the end of ``on_train_batch_end`` (the EMA
update included, data loading excluded). Each fit runs ``--warmup`` untimed steps, then a
multiple of k=5 timed steps (any 5 consecutive steps hold one full LookSAM step); the table shows the
median over rounds of each fit's mean step time, and its ratio to AdamW's.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from dermlit.callbacks import EMA
from dermlit.models.backbones import create_backbone
from dermlit.models.classifier import DermClassifier
from dermlit.optim import SAM, ImbSAM, LookSAM, Optimization

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
TAIL = ["akiec", "df", "vasc"]


def configurations() -> dict[str, tuple[callable, bool]]:
    """name -> (Optimization factory, EMA on)."""
    return {
        "adamw": (lambda: Optimization(ADAMW), False),
        "adamw+ema": (lambda: Optimization(ADAMW), True),
        "sam": (lambda: SAM(ADAMW, rho=0.05), False),
        "asam": (lambda: SAM(ADAMW, rho=0.5, adaptive=True), False),
        "looksam(k=5)": (lambda: LookSAM(ADAMW, rho=0.05, k=5), False),
        "imbsam": (lambda: ImbSAM(ADAMW, rho=0.05, tail_classes=TAIL), False),
        "sam+ema": (lambda: SAM(ADAMW, rho=0.05), True),
    }


class StepTimer(Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, [], 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)


def time_one(name: str, args, data: DataLoader) -> float:
    make_optim, ema = configurations()[name]
    torch.manual_seed(0)
    model = DermClassifier(create_backbone(args.model), optim=make_optim(), channels_last=args.gpu)
    timer = StepTimer(args.warmup)
    callbacks = ([EMA(decay=0.999)] if ema else []) + [timer]  # timer last: EMA update timed
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    return statistics.fmean(timer.times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per fit")
    p.add_argument("--cycles", type=int, default=1, help="timed steps = 5 * cycles")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="a subset of the configurations")
    args = p.parse_args()
    args.gpu = args.accelerator in ("gpu", "cuda")
    L.seed_everything(0, verbose=False)
    n = args.batch_size * (args.warmup + 5 * args.cycles)
    images = torch.randint(0, 256, (n, args.image_size, args.image_size, 3), dtype=torch.uint8)
    targets = torch.randint(0, 7, (n,))
    data = DataLoader(TensorDataset(images, targets), batch_size=args.batch_size)
    names = args.only or list(configurations())
    if "adamw" not in names:
        names.insert(0, "adamw")
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:  # interleaved: drifts in machine load hit every configuration
            results[name].append(time_one(name, args, data))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(results["adamw"])
    device = torch.cuda.get_device_name() if args.gpu else f"CPU x{torch.get_num_threads()}"
    print(
        f"\n{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}, "
        f"{device}; median of {args.rounds} rounds x {5 * args.cycles} steps\n"
    )
    print("| update | ms/step (median) | min-max over rounds | ratio to AdamW |")
    print("|---|---:|---:|---:|")
    for name in names:
        times = [1000 * t for t in results[name]]
        med = statistics.median(times)
        print(
            f"| {name} | {med:.1f} | {min(times):.1f}-{max(times):.1f} | {med / (1000 * base):.2f}x |"
        )


if __name__ == "__main__":
    main()
