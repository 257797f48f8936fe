"""The machine's measured compute peaks: what share of it a training step reaches needs them.

    python benchmarks/roofline.py                       # CPU, 2 threads, < 1 min
    python benchmarks/roofline.py --json docs/results/throughput/roofline.json
    python benchmarks/roofline.py --device cuda --sizes 4096 8192

Cases: a square ``torch.matmul`` in fp32 and bf16 (bf16 runs on AMX tiles where the CPU has
``amx_bf16``, printed from /proc/cpuinfo), and one 3x3 convolution forward + backward (input
and weight gradients) of ResNet-18's first stage at 64 px input (batch 64, 64 -> 64 channels,
16x16 feature map), fp32 and bf16 (autocast, as ``bf16-mixed`` trains), NCHW and channels_last. The cases are interleaved
repetition by repetition (drift hits all of them alike); each repetition runs a case for at
least ``--min-time`` seconds. FLOPs are counted as 2 per multiply-add (a matmul 2 n^3, a
convolution 2 N C_out H W C_in k^2 forward and twice that backward). The table shows the
median and the range (min-max) over repetitions in GFLOP/s.

``peaks()`` is what benchmarks/train_throughput.py calls to measure the peaks in its own run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Case:
    """One timed kernel: ``run()`` does ``flops`` floating-point operations."""

    name: str
    dtype: str
    flops: float
    run: Callable[[], object]


def matmul_case(n: int, dtype: str, device: str = "cpu") -> Case:
    """On a GPU the fp32 matmul runs on TF32 tensor cores when cuDNN's convolutions do
    (``torch.backends.cudnn.allow_tf32``, on by default, while matmuls default to true fp32):
    an fp32 training step's share of the peak is then measured against a peak of its kind, not
    against one about 7x lower on an H200."""
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    tf32 = device != "cpu" and dtype == "fp32" and torch.backends.cudnn.allow_tf32

    def run() -> torch.Tensor:
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = before or tf32
        try:
            return torch.matmul(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    return Case(f"matmul {n}{' (TF32)' if tf32 else ''}", dtype, 2.0 * n**3, run)


def conv_case(
    dtype: str,
    channels_last: bool,
    batch: int = 64,
    channels: int = 64,
    size: int = 16,
    device: str = "cpu",
) -> Case:
    """A 3x3 stride-1 convolution forward + backward (input and weight gradients).

    bf16 runs as training runs it (Lightning's ``bf16-mixed``): fp32 weights and input under
    ``torch.autocast``, which casts both to bf16 for the convolution.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, size, size, device=device).to(memory_format=fmt)
    x.requires_grad_()
    w = (torch.randn(channels, channels, 3, 3, device=device) * 0.05).to(memory_format=fmt)
    w.requires_grad_()
    grad = torch.randn(batch, channels, size, size, device=device, dtype=DTYPES[dtype])
    grad = grad.to(memory_format=fmt)
    device_type = torch.device(device).type

    def run() -> None:
        x.grad = w.grad = None
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            y = F.conv2d(x, w, padding=1)
        y.backward(grad)

    forward = 2.0 * batch * channels * size * size * channels * 9
    layout = "channels_last" if channels_last else "NCHW"
    name = f"conv3x3 {channels}ch {size}x{size} b{batch} fwd+bwd {layout}"
    return Case(name, dtype, 3 * forward, run)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def calibrate(case: Case, min_time: float, device: str = "cpu") -> int:
    """Iterations that take at least ``min_time`` seconds (after one warm-up call)."""
    for _ in range(3):  # oneDNN creates its primitives on the first calls
        case.run()
    _sync(device)
    iters = 1
    while True:
        start = time.perf_counter()
        for _ in range(iters):
            case.run()
        _sync(device)
        if time.perf_counter() - start >= min_time / 4:
            elapsed = time.perf_counter() - start
            return max(1, round(iters * min_time / elapsed))
        iters *= 2


def measure(
    cases: list[Case], reps: int, min_time: float, device: str = "cpu"
) -> dict[str, list[float]]:
    """GFLOP/s of every case in every repetition, the cases interleaved."""
    iters = {c.name + c.dtype: calibrate(c, min_time, device) for c in cases}
    samples: dict[str, list[float]] = {f"{c.name} {c.dtype}": [] for c in cases}
    for _ in range(reps):
        for c in cases:
            n = iters[c.name + c.dtype]
            _sync(device)
            start = time.perf_counter()
            for _ in range(n):
                c.run()
            _sync(device)
            samples[f"{c.name} {c.dtype}"].append(c.flops * n / (time.perf_counter() - start) / 1e9)
    return samples


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def peak_cases(sizes: tuple[int, ...], device: str = "cpu") -> list[Case]:
    return [matmul_case(n, d, device) for d in DTYPES for n in sizes]


def peaks(
    sizes: tuple[int, ...] = (1024, 2048), reps: int = 3, min_time: float = 0.2, device: str = "cpu"
) -> dict[str, float]:
    """The matmul peak per dtype: the best median over ``sizes`` (GFLOP/s)."""
    samples = measure(peak_cases(sizes, device), reps, min_time, device)
    return {d: max(statistics.median(samples[f"matmul {n} {d}"]) for n in sizes) for d in DTYPES}


def cpu_flags() -> dict[str, object]:
    """The CPU model name and its AMX/AVX-512 flags (Linux /proc/cpuinfo)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.exists() else ""
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    wanted = ("amx_bf16", "amx_tile", "amx_int8", "avx512f", "avx512_bf16")
    return {"model": model, **{f: f in flags for f in wanted}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per case and repetition")
    p.add_argument("--json", type=Path, default=None, help="also write the samples here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = peak_cases(tuple(args.sizes), args.device)
    cases += [conv_case(d, cl, device=args.device) for d in DTYPES for cl in (False, True)]
    samples = measure(cases, args.reps, args.min_time, args.device)
    flags = cpu_flags()
    print(
        f"cpu: {flags['model']}; " + ", ".join(f"{k}={v}" for k, v in flags.items() if k != "model")
    )
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name()}")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.reps} interleaved repetitions"
    )
    print("\n| case | dtype | GFLOP/s median | range |\n| --- | --- | ---: | ---: |")
    for c in cases:
        s = summary(samples[f"{c.name} {c.dtype}"])
        print(f"| {c.name} | {c.dtype} | {s['median']:.0f} | {s['min']:.0f}-{s['max']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "cpu": flags,
            "device": args.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "reps": args.reps,
            "cases": {k: {**summary(v), "samples": v} for k, v in samples.items()},
        }
        args.json.write_text(json.dumps(record, indent=2))
        print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
