"""Time per training step of AdamW, SAM, ASAM, LookSAM(k=5), ImbSAM, late-phase SAM and EMA
on/off, measured side by side: same model, batch and machine, interleaved round by round.

    python benchmarks/optim_overhead.py                         # CPU, resnet18 at 32 px, < 4 min
    python benchmarks/optim_overhead.py --accelerator gpu --image-size 224 --batch-size 64 \\
        --precision bf16-mixed --rounds 5                       # the GPU figures

A step is timed from ``on_train_batch_start`` to the end of ``on_train_batch_end`` (the EMA
update included, data loading excluded). Each fit runs ``--warmup`` untimed steps, then a
multiple of k=5 timed steps (any 5 consecutive steps hold one full LookSAM step); the table shows
the median over rounds of each fit's mean step time, and its ratio to AdamW's.

Late-phase SAM (``optim.start``) is timed as one fit of two epochs with SAM from epoch 1, so both
phases run through the real gate; its whole-run overhead is then
``(e0 * plain + (E - e0) * sam) / (E * adamw)`` for a run of ``--epochs`` E switching at
``e0 = floor(--late-start * E)`` (validation and data loading not counted).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from dermlit.callbacks import EMA
from dermlit.models.backbones import create_backbone
from dermlit.models.classifier import DermClassifier
from dermlit.optim import SAM, ImbSAM, LookSAM, UpdateRule

ADAMW = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)
TAIL = ["akiec", "df", "vasc"]


#: the late-phase configuration: epoch 0 plain steps, epoch 1 SAM (two timed epochs)
LATE = "sam(late)"


def configurations() -> dict[str, tuple[callable, bool]]:
    """name -> (UpdateRule factory, EMA on)."""
    return {
        "adamw": (lambda: UpdateRule(ADAMW), False),
        "adamw+ema": (lambda: UpdateRule(ADAMW), True),
        "sam": (lambda: SAM(ADAMW, rho=0.05), False),
        "asam": (lambda: SAM(ADAMW, rho=0.5, adaptive=True), False),
        "looksam(k=5)": (lambda: LookSAM(ADAMW, rho=0.05, k=5), False),
        "looksam(k=5,global)": (lambda: LookSAM(ADAMW, rho=0.05, k=5, layerwise=False), False),
        "imbsam": (lambda: ImbSAM(ADAMW, rho=0.05, tail_classes=TAIL), False),
        "sam+ema": (lambda: SAM(ADAMW, rho=0.05), True),
        LATE: (lambda: SAM(ADAMW, rho=0.05, start=1), False),
    }


class StepTimer(Callback):
    """Step times per epoch, the first ``warmup`` steps of each epoch left out."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t0 = warmup, {}, 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        if batch_idx >= self.warmup:
            self.times.setdefault(trainer.current_epoch, []).append(time.perf_counter() - self._t0)


def time_one(name: str, args, data: DataLoader) -> list[float]:
    """The mean step time of each epoch (one epoch; two for the late-phase configuration)."""
    make_optim, ema = configurations()[name]
    torch.manual_seed(0)
    model = DermClassifier(create_backbone(args.model), optim=make_optim(), channels_last=args.gpu)
    timer = StepTimer(args.warmup)
    callbacks = ([EMA(decay=0.999)] if ema else []) + [timer]  # timer last: EMA update timed
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=1,
        precision=args.precision,
        max_epochs=2 if name == LATE else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    return [statistics.fmean(timer.times[e]) for e in sorted(timer.times)]


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
    p.add_argument("--late-start", type=float, default=0.8, help="late-phase SAM's optim.start")
    p.add_argument("--epochs", type=int, default=15, help="the run the late phase is a part of")
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
    results: dict[str, list[float]] = {name: [] for name in names if name != LATE}
    if LATE in names:
        results |= {f"{LATE}: plain phase": [], f"{LATE}: SAM phase": []}
    for r in range(args.rounds):
        for name in names:  # interleaved: drifts in machine load hit every configuration
            times = time_one(name, args, data)
            if name == LATE:
                results[f"{LATE}: plain phase"].append(times[0])
                results[f"{LATE}: SAM phase"].append(times[1])
            else:
                results[name].append(times[0])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    base = statistics.median(results["adamw"])
    device = torch.cuda.get_device_name() if args.gpu else f"CPU x{torch.get_num_threads()}"
    print(
        f"\n{args.model}, {args.image_size} px, batch {args.batch_size}, {args.precision}, "
        f"{device}; median of {args.rounds} rounds x {5 * args.cycles} steps\n"
    )
    print("| update | ms/step (median) | min-max over rounds | ratio to AdamW |")
    print("|---|---:|---:|---:|")
    for name in results:
        times = [1000 * t for t in results[name]]
        med = statistics.median(times)
        print(
            f"| {name} | {med:.1f} | {min(times):.1f}-{max(times):.1f} | {med / (1000 * base):.2f}x |"
        )
    if LATE in names:
        plain = statistics.median(results[f"{LATE}: plain phase"]) / base
        sam = statistics.median(results[f"{LATE}: SAM phase"]) / base
        print("\n" + late_phase_line(plain, sam, args.late_start, args.epochs))


def late_phase_line(plain: float, sam: float, start: float, epochs: int) -> str:
    """The whole-run overhead of late-phase SAM from its two measured per-step ratios."""
    e0 = math.floor(start * epochs + 1e-9)  # as dermlit.optim.sam.sam_start_epoch
    share = (epochs - e0) / epochs
    effective = (1 - share) * plain + share * sam
    return (
        f"late-phase SAM, optim.start={start} of {epochs} epochs: SAM in epochs {e0}-{epochs - 1} "
        f"({100 * share:.0f} % of the steps); whole-run step-time ratio to AdamW = "
        f"{1 - share:.2f} x {plain:.2f} + {share:.2f} x {sam:.2f} = {effective:.2f}x"
    )


if __name__ == "__main__":
    main()
