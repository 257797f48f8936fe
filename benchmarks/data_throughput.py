"""Images per second from JPEG decode vs the uint8 cache, beside what the model consumes.

Loader side: one epoch over a subset (real HAM10000 if present, else the synthetic set),
best of two epochs after a warm-up epoch (persistent workers started, page cache warm), at
each image size and worker count. "decode" is a DataLoader over a dataset that decodes and resizes
each JPEG on access (what a pipeline without the cache does every epoch); "cache" is
``DermDataModule.train_dataloader()`` over the memory-mapped uint8 cache.

Model side: the default CPU experiment's training step (ResNet-18 from scratch at 64 px,
batch 64, forward + backward + AdamW step, uint8 -> float and normalisation included), the
median of 8 steps after 2 warm-up steps.

    python benchmarks/data_throughput.py [--images 1000] [--sizes 64 224] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from dermlit.data.cache import load_square
from dermlit.data.datamodule import DermDataModule
from dermlit.data.sources import HAM10000Source, SyntheticSource
from dermlit.data.validation import ValidationReport, check_index
from dermlit.models.backbones import create_backbone

REPO = Path(__file__).resolve().parents[1]
HAM = Path(os.environ.get("DERMLIT_HAM10000", REPO.parent / "shared/data/ham10000-200x150"))


class Subset:
    """``n`` images of a source (seeded sample), all in the train split: every image is timed."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n = inner, n

    def __repr__(self) -> str:
        return f"Subset({self.inner!r}, {self.n})"

    def load(self) -> tuple[pd.DataFrame, ValidationReport]:
        df, _ = self.inner.load()
        df = df.sample(n=min(self.n, len(df)), random_state=0).reset_index(drop=True)
        df["split"] = "train"
        return df, check_index(df, repr(self))


class DecodingDataset(Dataset):
    """Decodes and resizes one JPEG per item: the pipeline the cache replaces."""

    def __init__(self, paths: list[str], targets: np.ndarray, size: int) -> None:
        self.paths, self.targets, self.size = paths, targets, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(load_square(self.paths[i], self.size)), int(self.targets[i])


def epoch_rate(loader: DataLoader, repeats: int = 2) -> float:
    """Best images/s over ``repeats`` epochs after a warm-up epoch (starts workers, warms the
    page cache); best-of because the machine is shared and slowdowns come from elsewhere."""
    for _ in loader:
        pass
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for x, _ in loader:
            n += len(x)
        best = max(best, n / (time.perf_counter() - start))
    return best


def model_rate(batch: int = 64, size: int = 64, steps: int = 8) -> float:
    model = create_backbone("resnet18", pretrained=False, num_classes=7)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    y = torch.randint(0, 7, (batch,))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def step() -> None:
        inputs = (x.permute(0, 3, 1, 2).float() / 255 - mean) / std
        loss = torch.nn.functional.cross_entropy(model(inputs), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, oneDNN kernel selection)
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if (HAM / "HAM10000_metadata.csv").is_file():
            inner, what = HAM10000Source(HAM), f"real HAM10000 ({HAM})"
        else:
            inner = SyntheticSource(Path(tmp) / "synthetic", n_images=args.images)
            what = "synthetic set (real HAM10000 not found)"
        source = Subset(inner, args.images)
        print(f"data: {what}, {args.images} images; torch threads: {torch.get_num_threads()}")
        print(f"{'size':>5} {'workers':>7} {'decode img/s':>13} {'cache img/s':>12} {'ratio':>6}")
        rates: dict[tuple[int, int], float] = {}
        for size in args.sizes:
            for workers in args.workers:
                dm = DermDataModule(
                    source,
                    image_size=size,
                    batch_size=args.batch_size,
                    num_workers=workers,
                    cache_dir=Path(tmp) / "cache",
                )
                dm.setup("fit")  # builds the cache once per size (not timed)
                train = dm.frame("train")
                decode = DataLoader(
                    DecodingDataset(train["path"].tolist(), train["target"].to_numpy(), size),
                    batch_size=args.batch_size,
                    shuffle=True,
                    num_workers=workers,
                    persistent_workers=workers > 0,
                )
                rate_decode = epoch_rate(decode)
                rates[size, workers] = rate_cache = epoch_rate(dm.train_dataloader())
                print(
                    f"{size:>5} {workers:>7} {rate_decode:>13.0f} {rate_cache:>12.0f} "
                    f"{rate_cache / rate_decode:>5.1f}x"
                )
                del decode, dm
    consumed = model_rate(args.batch_size, 64)
    print(f"model: resnet18 train step at 64 px, batch {args.batch_size}: {consumed:.0f} img/s")
    for workers in args.workers:
        if (64, workers) in rates:
            ratio = rates[64, workers] / consumed
            verdict = "meets" if ratio >= 5 else "misses"
            print(
                f"cache at 64 px, {workers} workers / model consumption: {ratio:.1f}x "
                f"({verdict} the >= 5x target)"
            )


if __name__ == "__main__":
    main()
