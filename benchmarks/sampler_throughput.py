"""Indices per second of each training sampler, beside torch's own samplers, in one run.

Labels follow HAM10000's class proportions, scaled to the dataset size. A measurement is one
full epoch as a DataLoader consumes it: ``set_epoch`` then iterating every index (Python
ints). Best of ``--repeats`` runs.

    python benchmarks/sampler_throughput.py [--sizes 10000 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

from dermlit.constants import HAM10000_CLASS_COUNTS
from dermlit.data.samplers import ProgressiveSampler, ShuffleSampler, WeightedClassSampler

Factory = Callable[[np.ndarray], Sampler[int]]

SAMPLERS: dict[str, Factory] = {
    "shuffle": lambda y: ShuffleSampler(y),
    "inverse_frequency (iid)": lambda y: WeightedClassSampler(y, power=1.0),
    "sqrt_frequency (strat.)": lambda y: WeightedClassSampler(y, power=0.5, stratified=True),
    "class_balanced (strat.)": lambda y: WeightedClassSampler(y, power=1.0, stratified=True),
    "progressive (total_epochs=3)": lambda y: ProgressiveSampler(y, total_epochs=3),
    "torch RandomSampler": lambda y: RandomSampler(range(len(y))),
    "torch WeightedRandomSampler": lambda y: WeightedRandomSampler(
        torch.from_numpy(1.0 / np.bincount(y)[y]), num_samples=len(y)
    ),
}


def ham_like_labels(size: int, seed: int = 0) -> np.ndarray:
    counts = np.array(list(HAM10000_CLASS_COUNTS.values()), dtype=np.float64)
    return np.random.default_rng(seed).choice(len(counts), size=size, p=counts / counts.sum())


def epoch_seconds(sampler: Sampler[int], repeats: int) -> float:
    best = float("inf")
    for epoch in range(1, repeats + 1):
        set_epoch = getattr(sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        start = time.perf_counter()
        for _ in sampler:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable across machines; the samplers are single-threaded

    results: dict[str, list[float]] = {name: [] for name in SAMPLERS}
    for size in args.sizes:
        labels = ham_like_labels(size)
        for name, make in SAMPLERS.items():
            results[name].append(size / epoch_seconds(make(labels), args.repeats))

    header = f"{'sampler':<30}" + "".join(f"{f'{s:,} items':>18}" for s in args.sizes)
    print(f"indices/s (one full epoch incl. iteration, best of {args.repeats}, 1 thread)")
    print(header)
    print("-" * len(header))
    for name, rates in results.items():
        print(f"{name:<30}" + "".join(f"{r:>18,.0f}" for r in rates))


if __name__ == "__main__":
    main()
