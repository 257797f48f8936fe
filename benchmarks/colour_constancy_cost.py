"""What Shades-of-Gray colour constancy costs next to a training step, measured side by side.

    /work/bin/heavy python benchmarks/colour_constancy_cost.py          # CPU: ~1-2 min
    python benchmarks/colour_constancy_cost.py --device cuda --sizes 64 224

dermlit applies colour constancy ONCE, while decoding into the uint8 cache
(``data/colour_constancy.py``), so a training step pays nothing for it. This measures the upper
bound as if it ran on every batch: ``ShadesOfGray(p=6)`` on a uint8 batch (B, S, S, 3) vs one
training step of ResNet-18 (uint8 -> normalise -> forward -> cross-entropy -> backward -> AdamW
step) on the same batch, at each size; the two are interleaved ``--rounds`` times (each round
times ``--steps`` of each after ``--warmup`` untimed ones) and the table gives the median and
range over rounds of the mean time per call, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dermlit.data.colour_constancy import ShadesOfGray
from dermlit.models.backbones import create_backbone


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def measure(size: int, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch_size, size, size, 3), dtype=torch.uint8, device=device
    )
    targets = torch.randint(0, 7, (args.batch_size,), device=device)
    model = create_backbone("resnet18").to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    cc = ShadesOfGray(6.0)

    def train_step() -> None:
        x = (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        loss = torch.nn.functional.cross_entropy(model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def colour() -> None:
        cc(images)

    for _ in range(args.warmup):
        train_step()
        colour()
    steps, ccs = [], []
    for _ in range(args.rounds):  # interleaved: both see the same machine state
        steps.append(timed(train_step, args.steps, device))
        ccs.append(timed(colour, args.steps, device))
    return {
        "size": size,
        "step_ms": [1e3 * t for t in steps],
        "cc_ms": [1e3 * t for t in ccs],
        "ratio": statistics.median(ccs) / statistics.median(steps),
    }


def line(row: dict, batch: int) -> str:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"

    return (
        f"| {row['size']} | {batch} | {cell(row['step_ms'])} | {cell(row['cc_ms'])} | "
        f"{100 * row['ratio']:.2f} % |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, rounds {args.rounds} x "
        f"{args.steps} calls; median [min, max] over rounds of the mean ms per call\n"
    )
    print("| image px | batch | ResNet-18 train step (ms) | Shades of Gray p=6 (ms) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for size in args.sizes:
        print(line(measure(size, args, device), args.batch_size), flush=True)


if __name__ == "__main__":
    main()
