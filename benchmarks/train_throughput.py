"""Training throughput of a recipe through the real config, as a share of the machine's peak.

    python benchmarks/train_throughput.py experiment=ham10000_cpu --steps 20      # one config
    python benchmarks/train_throughput.py experiment=ham10000_cpu_best --threads 2 \\
        --variants fp32 fp32+cl bf16 bf16+cl bf16+cl+compile --rounds 3 \\
        --json docs/results/throughput/cpu.json                                   # the table
    python benchmarks/train_throughput.py experiment=ham10000_gpu --variants bf16+cl \\
        --peak-sizes 4096 8192                                                    # on a GPU

Composes ``conf/train.yaml`` with the overrides (plus each ``--variants`` entry's overrides,
``VARIANTS``), builds the datamodule once and, round by round with the variants interleaved
(the order rotates each round), trains ``--warmup`` + ``--steps`` optimizer steps of a fresh
model (no validation, no checkpoints). The config's callbacks that change the training
computation (EMA) are kept and timed; bookkeeping ones (checkpointing, progress bar, LR
monitor) are dropped. Each round also measures the matmul peaks (``roofline.peaks``), the
``augment=dermoscopy`` preset on one batch and a validation forward pass, so drift shows in
every column. The table gives medians and ranges (min-max) over rounds.

- step images/s: ``on_train_batch_start`` -> ``on_train_batch_end`` (forward, backward, update,
  EMA update); cycle images/s: batch end -> next batch end, i.e. also the data loader, the
  transfer and ``on_after_batch_transfer`` (conversion and the on-device augmentation).
- GFLOP/s: step images/s x FLOPs per image, counted by ``torch.utils.flop_counter.
  FlopCounterMode`` on the fp32 forward and multiplied by 3 (backward = input + weight
  gradients). FlopCounterMode counts only matrix products: aten mm/addmm/bmm/baddbmm,
  convolution (and their backward), scaled-dot-product attention, at 2 FLOPs per
  multiply-add; BatchNorm, activations, pooling, the loss and the optimizer are NOT counted
  (they are memory-bound; on ResNet-18 the counted share is the bulk of the arithmetic). The
  printed ``fwd+bwd counted`` is the counter run over a real backward too (the stem conv needs
  no input gradient, so it is a little under 3x).
  These are the model's FLOPs per image (the MFU convention): an update rule's extra passes
  (SAM's second forward-backward) are not counted, so a SAM config shows about half the share.
- share of peak: GFLOP/s / the matmul peak of the step's compute dtype measured in the same
  run (fp32 for 32-true, bf16 for bf16-mixed: AMX on CPUs that have it).
- per-epoch costs outside the step: the augmentation preset per batch, one validation pass
  (the EMA callback adds a second one of the same cost), as seconds per epoch of the config's
  train/val split sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging
from omegaconf import OmegaConf, open_dict
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402  (a sibling script)

from dermlit.config import CONF_DIR, register_resolvers  # noqa: E402
from dermlit.fit import instantiate_dict  # noqa: E402

#: callbacks that only record or display, left out of the timed fit
BOOKKEEPING = (L.pytorch.callbacks.Checkpoint, L.pytorch.callbacks.ProgressBar)
BOOKKEEPING += (L.pytorch.callbacks.LearningRateMonitor,)

FP32 = ["trainer.precision=32-true"]
BF16 = ["trainer.precision=bf16-mixed"]
NCHW, CL = ["model.channels_last=false"], ["model.channels_last=true"]
#: name -> (extra overrides, torch.compile the backbone)
VARIANTS: dict[str, tuple[list[str], bool]] = {
    "config": ([], False),  # the overrides as given
    "fp32": (FP32 + NCHW, False),
    "fp32+cl": (FP32 + CL, False),
    "bf16": (BF16 + NCHW, False),
    "bf16+cl": (BF16 + CL, False),
    "fp32+compile": (FP32 + NCHW, True),
    "fp32+cl+compile": (FP32 + CL, True),
    "bf16+cl+compile": (BF16 + CL, True),
    "cpu_fast": (["trainer=cpu_fast"] + CL, False),
}


class StepTimer(L.Callback):
    """Step and cycle times of each training batch (CUDA-synchronised) after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.cycles, self.images = warmup, [], [], 0
        self._start = self._last_end = 0.0
        self.first_step_s = math.nan

    def _sync(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_start(self, trainer, module) -> None:
        # the first cycle starts here (with --warmup 0 it was timed from 0: ~0 images/s)
        self._fit_start = self._last_end = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync()
        end = time.perf_counter()
        if trainer.global_step == 1:  # includes torch.compile's build
            self.first_step_s = end - self._fit_start
        if trainer.global_step > self.warmup:
            self.steps.append(end - self._start)
            self.cycles.append(end - self._last_end)
            self.images += len(batch[0])
        self._last_end = end


def compose_variant(overrides: list[str], name: str) -> tuple[object, bool]:
    extra, compiled = VARIANTS[name]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *extra], return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.run_dir = "outputs/benchmarks/train_throughput"
    return cfg, compiled


def flops_per_image(cfg, batch: int = 8) -> tuple[float, float]:
    """(counted forward FLOPs, counted forward+backward FLOPs) per image, fp32, NCHW."""
    backbone = instantiate(cfg.model.backbone)
    x = torch.randn(batch, 3, cfg.data.image_size, cfg.data.image_size)
    with FlopCounterMode(display=False) as forward:
        backbone(x)
    with FlopCounterMode(display=False) as both:
        backbone(x).sum().backward()
    return forward.get_total_flops() / batch, both.get_total_flops() / batch


def normalised_batch(datamodule, split: str, model, device) -> torch.Tensor:
    images, _ = next(iter(datamodule.loader(split)))
    x = images.permute(0, 3, 1, 2).float().div_(255.0).to(device)
    x = (x - model.mean) / model.std
    return x.contiguous(memory_format=torch.channels_last) if model.channels_last else x


def time_call(fn, repeats: int, device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_variant(cfg, compiled: bool, datamodule, args) -> dict:
    """One fit of ``warmup + steps`` steps, then one validation forward timing."""
    L.seed_everything(cfg.seed, verbose=False)
    model = instantiate(cfg.model)
    if compiled:
        model.backbone = torch.compile(model.backbone)
    timer = StepTimer(args.warmup)
    kept = [c for c in instantiate_dict(cfg.get("callbacks")) if not isinstance(c, BOOKKEEPING)]
    trainer = instantiate(
        cfg.trainer,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[*kept, timer],  # the timer last: the EMA update is inside the step
        enable_progress_bar=False,
        enable_model_summary=False,
        strategy="auto",
        devices=1,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    device = trainer.strategy.root_device
    trainer.fit(model, datamodule=datamodule)
    # the fit's teardown moves the module to the CPU: on a GPU, validation was timed there
    model.to(device).eval()
    x = normalised_batch(datamodule, "val", model, model.device)

    def validate() -> None:
        with torch.inference_mode(), trainer.precision_plugin.forward_context():
            model(x)

    val_s = time_call(validate, args.val_repeats, model.device)
    return {
        "step_ips": timer.images / sum(timer.steps),
        "cycle_ips": timer.images / sum(timer.cycles),
        "val_ips": len(x) / val_s,
        "first_step_s": timer.first_step_s,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30
        if torch.cuda.is_available()
        else None,
    }


def augment_seconds(overrides: list[str], datamodule, device) -> float:
    """Seconds per training batch of the ``dermoscopy`` preset (fp32, on ``device``)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "augment=dermoscopy"])
    augment = instantiate(cfg.augment).to(device)
    images, _ = next(iter(datamodule.train_dataloader()))
    x = images.permute(0, 3, 1, 2).float().div_(255.0).to(device)
    return time_call(lambda: augment(x), 5, torch.device(device))


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    m, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def run(args) -> dict:
    register_resolvers()
    names = args.variants or ["config"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}; choose from {sorted(VARIANTS)}")
    cfgs = {n: compose_variant(args.overrides, n) for n in names}
    first = cfgs[names[0]][0]
    for n, (cfg, _) in cfgs.items():
        if OmegaConf.to_container(cfg.data) != OmegaConf.to_container(first.data):
            raise SystemExit(f"variant {n!r} changes the data config: benchmark it on its own")
    datamodule = instantiate(first.data)
    datamodule.setup("fit")
    device = "cuda" if first.trainer.accelerator in ("gpu", "cuda") else "cpu"
    fwd, both = flops_per_image(first)
    samples = {n: [] for n in names}
    errors: dict[str, str] = {}
    peaks, augment = [], []
    for r in range(args.rounds):
        peaks.append(roofline.peaks(tuple(args.peak_sizes), 1, args.peak_min_time, device))
        augment.append(augment_seconds(args.overrides, datamodule, device))
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            if n in errors:
                continue
            cfg, compiled = cfgs[n]
            try:
                samples[n].append(time_variant(cfg, compiled, datamodule, args))
            except Exception as error:  # torch.compile may fail on a CPU toolchain
                if not compiled:
                    raise
                errors[n] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            print(f"round {r + 1} {n}: {samples[n][-1] if n not in errors else errors[n]}")
    n_train, n_val = len(datamodule.frame("train")), len(datamodule.frame("val"))
    ema = any(isinstance(c, WeightAveraging) for c in instantiate_dict(first.get("callbacks")))
    return {
        "overrides": args.overrides,
        "device": torch.cuda.get_device_name() if device == "cuda" else roofline.cpu_flags(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": first.data.batch_size,
        "image_size": first.data.image_size,
        "n_train": n_train,
        "n_val": n_val,
        "ema_second_val_pass": ema,
        "flops_forward_per_image": fwd,
        "flops_fwd_bwd_counted_per_image": both,
        "peak_sizes": args.peak_sizes,
        "peaks_gflops": {d: [p[d] for p in peaks] for d in roofline.DTYPES},
        "augment_dermoscopy_s_per_batch": augment,
        "variants": {
            n: {
                "overrides": VARIANTS[n][0],
                "compile": VARIANTS[n][1],
                "precision": cfgs[n][0].trainer.precision,
                "samples": samples[n],
            }
            for n in names
        },
        "errors": errors,
    }


def report(res: dict) -> str:
    """The markdown tables of a ``run`` result."""
    fwd, b = res["flops_forward_per_image"], res["batch_size"]
    peak = {d: stats(v) for d, v in res["peaks_gflops"].items()}
    aug = stats(res["augment_dermoscopy_s_per_batch"])
    lines = [
        f"config: {' '.join(res['overrides'])}; batch {b}, {res['image_size']} px; "
        f"device: {res['device']}; torch {res['torch']}, {res['threads']} threads; "
        f"{res['rounds']} interleaved rounds x {res['steps']} timed steps "
        f"(after {res['warmup']} warm-up); median (min-max) over rounds",
        f"model FLOPs per image (FlopCounterMode): forward {fwd / 1e9:.3f} GFLOP, x3 = "
        f"{3 * fwd / 1e9:.3f}; counted over a real backward {res['flops_fwd_bwd_counted_per_image'] / 1e9:.3f}",
        f"matmul peak (GFLOP/s, best of {res['peak_sizes']} square, same run): "
        f"fp32 {fmt(peak['fp32'])}, bf16 {fmt(peak['bf16'])}",
        "",
        "| variant | precision | step images/s | cycle images/s | GFLOP/s | share of peak | "
        "val images/s | first step s | vs first row (step) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = None
    for n, v in res["variants"].items():
        if n in res["errors"]:
            lines.append(f"| {n} | {v['precision']} | failed: {res['errors'][n]} | | | | | | |")
            continue
        if not v["samples"]:
            continue
        step = stats([s["step_ips"] for s in v["samples"]])
        cycle = stats([s["cycle_ips"] for s in v["samples"]])
        val = stats([s["val_ips"] for s in v["samples"]])
        first = stats([s["first_step_s"] for s in v["samples"]])
        gflops = {k: x * 3 * fwd / 1e9 for k, x in step.items()}
        dtype = "bf16" if "bf16" in str(v["precision"]) else "fp32"
        share = f"{gflops['median'] / peak[dtype]['median']:.1%} of {dtype}"
        base = base or step["median"]
        lines.append(
            f"| {n} | {v['precision']} | {fmt(step)} | {fmt(cycle)} | {fmt(gflops)} | {share} | "
            f"{fmt(val)} | {fmt(first, digits=1)} | {step['median'] / base:.2f}x |"
        )
    lines += ["", "Per epoch (medians; the config's split sizes):", ""]
    lines += [
        "| variant | train steps s | data+transfer+augment s | validation pass s | "
        "EMA's second pass s | dermoscopy augment s (if on) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    batches = math.ceil(res["n_train"] / b)
    for n, v in res["variants"].items():
        if n in res["errors"] or not v["samples"]:
            continue
        step = statistics.median(s["step_ips"] for s in v["samples"])
        cycle = statistics.median(s["cycle_ips"] for s in v["samples"])
        val = statistics.median(s["val_ips"] for s in v["samples"])
        train_s, val_s = res["n_train"] / step, res["n_val"] / val
        ema_s = f"{val_s:.1f}" if res["ema_second_val_pass"] else "0 (no EMA)"
        lines.append(
            f"| {n} | {train_s:.1f} | {res['n_train'] / cycle - train_s:.1f} | {val_s:.1f} | "
            f"{ema_s} | {batches * aug['median']:.1f} |"
        )
    lines.append(
        f"\ndermoscopy augmentation: {fmt(aug, 1e3, 1)} ms per batch of {b} "
        f"({batches} batches per epoch of {res['n_train']} images; validation {res['n_val']})"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=ham10000_gpu"
    )
    parser.add_argument("--variants", nargs="*", default=None, help=f"of {sorted(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per fit")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--val-repeats", type=int, default=3)
    parser.add_argument("--peak-sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--peak-min-time", type=float, default=0.2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args)
    text = report(res)
    print(text)
    for path, content in ((args.json, json.dumps(res, indent=2)), (args.markdown, text + "\n")):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


if __name__ == "__main__":
    main()
