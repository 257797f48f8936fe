from pathlib import Path

import torch

from dermlit.constants import CLASSES
from dermlit.data.datamodule import DermDataModule
from dermlit.data.samplers import ShuffleSampler
from dermlit.data.sources import HAM10000Source


def test_loaders_serve_uint8_batches_of_their_split(tiny_ham: Path, tmp_path: Path) -> None:
    dm = DermDataModule(
        HAM10000Source(tiny_ham),
        image_size=16,
        batch_size=8,
        cache_dir=tmp_path,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 16, 16, 3)
    assert targets.dtype == torch.int64
    seen = {split: len(dm.frame(split)) for split in ("train", "val", "test")}
    assert sum(seen.values()) == 7 * 4 * 2
    assert sum(len(b[1]) for b in dm.test_dataloader()) == seen["test"]
    # class counts come from the train split only
    train = dm.frame("train")["label"].value_counts()
    assert dm.class_counts == [int(train[c]) for c in CLASSES]
    # the tiny set's colour encodes the class: the cache kept image <-> label aligned
    test_images, test_targets = next(iter(dm.test_dataloader()))
    red = test_images[..., 0].float().mean(dim=(1, 2))
    assert torch.allclose(red / 30, test_targets.float(), atol=0.5)


def test_sampler_partial_gets_train_labels_and_seed(tiny_ham: Path, tmp_path: Path) -> None:
    def factory(labels, seed, num_replicas, rank):
        return ShuffleSampler(labels, seed=seed, num_replicas=num_replicas, rank=rank)

    dm = DermDataModule(
        HAM10000Source(tiny_ham),
        image_size=16,
        cache_dir=tmp_path,
        sampler=factory,
        sampler_seed=3,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ShuffleSampler)
    assert sorted(loader.sampler) == list(range(len(dm.frame("train"))))
