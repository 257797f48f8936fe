"""Samplers: target frequencies, DDP shards, determinism, progressive endpoints, state.

Statistical tolerance: i.i.d. draws are checked per class against the binomial expectation
M*q_c within 4 standard deviations sqrt(M q (1-q)) (per instance: 5 sd, as there are hundreds);
seeds are fixed, so a pass is reproducible. Stratified draws are checked exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from dermlit.data.samplers import (
    ProgressiveSampler,
    ShuffleSampler,
    WeightedClassSampler,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "sampler"
COUNTS = np.array([500, 200, 50, 10])
N = int(COUNTS.sum())


def make_labels() -> np.ndarray:
    # shuffled so that class blocks are not contiguous item ranges
    return np.random.default_rng(0).permutation(np.repeat(np.arange(4), COUNTS))


LABELS = make_labels()


def class_counts(indices: torch.Tensor | list[int], labels: np.ndarray = LABELS) -> np.ndarray:
    return np.bincount(labels[np.asarray(indices)], minlength=len(COUNTS))


def within_sd(observed: np.ndarray, total: int, probs: np.ndarray, k: float) -> bool:
    sd = np.sqrt(total * probs * (1 - probs))
    return bool(np.all(np.abs(observed - total * probs) <= k * sd))


@pytest.mark.parametrize("power", [1.0, 0.5, 0.0])
def test_iid_class_frequencies_match_target(power):
    m = 40_000
    sampler = WeightedClassSampler(LABELS, power=power, num_samples=m, seed=1)
    sample = sampler.epoch_sample()
    target = COUNTS ** (1 - power) / (COUNTS ** (1 - power)).sum()  # P(c) ~ n_c^(1 - power)
    assert sample.numel() == m
    assert within_sd(class_counts(sample), m, target, k=4)


def test_iid_inverse_frequency_is_per_sample_weight_one_over_n():
    """Two-stage draw == WeightedRandomSampler(weights=1/n_y): each item has prob 1/(C n_y)."""
    m = 200_000
    sample = WeightedClassSampler(LABELS, power=1.0, num_samples=m, seed=2).epoch_sample()
    per_item = np.bincount(sample.numpy(), minlength=N)
    item_prob = 1.0 / (len(COUNTS) * COUNTS[LABELS])
    assert within_sd(per_item, m, item_prob, k=5)
    # i.i.d.: item use within a class varies by chance (stratified keeps max - min <= 1)
    assert np.ptp(per_item[LABELS == 0]) > 1


@pytest.mark.parametrize(("power", "m"), [(1.0, 1000), (0.5, 777), (1.0, 3 * N + 1)])
def test_stratified_quotas_exact_and_items_used_evenly(power, m):
    sampler = WeightedClassSampler(LABELS, power=power, stratified=True, num_samples=m, seed=3)
    target = COUNTS ** (1 - power) / (COUNTS ** (1 - power)).sum()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        sample = sampler.epoch_sample()
        got = class_counts(sample)
        assert got.sum() == m
        assert np.all((got == np.floor(m * target)) | (got == np.ceil(m * target)))
        per_item = np.bincount(sample.numpy(), minlength=N)
        for c in range(len(COUNTS)):
            uses = per_item[LABELS == c]
            assert uses.max() - uses.min() <= 1  # cycled without replacement within the class


def test_stratified_quotas_unbiased_over_epochs():
    # 7 slots over 4 equiprobable classes: each class gets 1 or 2; on average exactly 7/4.
    sampler = WeightedClassSampler(LABELS, power=1.0, stratified=True, num_samples=7, seed=4)
    totals = np.zeros(4)
    epochs = 4000
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        totals += class_counts(sampler.epoch_sample())
    # per-epoch count is 1 or 2 (Bernoulli 0.75 on top of 1): sd of the mean sqrt(.75*.25/E)
    assert np.all(np.abs(totals / epochs - 7 / 4) <= 4 * math.sqrt(0.75 * 0.25 / epochs))


def test_shuffle_is_a_permutation_and_repeats_whole_passes():
    sampler = ShuffleSampler(LABELS, seed=0)
    assert sorted(sampler.epoch_sample().tolist()) == list(range(N))
    longer = ShuffleSampler(LABELS, num_samples=2 * N + 5, seed=0).epoch_sample()
    uses = np.bincount(longer.numpy(), minlength=N)
    assert set(uses.tolist()) == {2, 3} and uses.sum() == 2 * N + 5


SAMPLERS = {
    "shuffle": lambda **kw: ShuffleSampler(LABELS, **kw),
    "iid": lambda **kw: WeightedClassSampler(LABELS, power=1.0, **kw),
    "stratified": lambda **kw: WeightedClassSampler(LABELS, power=0.5, stratified=True, **kw),
    "progressive": lambda **kw: ProgressiveSampler(LABELS, total_epochs=5, **kw),
}


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
@pytest.mark.parametrize("replicas", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_shards_partition_the_epoch_sample(kind, replicas, drop_last):
    m = 101  # not a multiple of 2, 3 or 4
    shards = []
    for rank in range(replicas):
        sampler = SAMPLERS[kind](
            num_samples=m, seed=7, num_replicas=replicas, rank=rank, drop_last=drop_last
        )
        sampler.set_epoch(2)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler)
    full = SAMPLERS[kind](num_samples=m, seed=7)
    full.set_epoch(2)
    sample = full.epoch_sample().tolist()
    assert {len(s) for s in shards} == {len(shards[0])}  # equal batches on every rank
    total = len(shards[0]) * replicas
    expected = (sample + sample)[:total]  # padded with the head, or truncated
    assert total == (m // replicas * replicas if drop_last else math.ceil(m / replicas) * replicas)
    # position j of the padded sample belongs to rank j % replicas: disjoint, union = sample
    interleaved = [shards[j % replicas][j // replicas] for j in range(total)]
    assert interleaved == expected


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_same_seed_and_epoch_same_order_else_different(kind):
    a, b = SAMPLERS[kind](seed=11), SAMPLERS[kind](seed=11)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    c = SAMPLERS[kind](seed=12)
    c.set_epoch(3)
    assert list(a) != list(c)
    # (seed, epoch) = (0, 1) and (1, 0) are different streams
    d, e = SAMPLERS[kind](seed=0), SAMPLERS[kind](seed=1)
    d.set_epoch(1)
    assert list(d) != list(e)


@pytest.mark.parametrize("stratified", [True, False])
def test_progressive_endpoints(stratified):
    prog = ProgressiveSampler(LABELS, total_epochs=6, stratified=stratified, seed=5)
    inst = WeightedClassSampler(LABELS, power=0.0, stratified=stratified, seed=5)
    bal = WeightedClassSampler(LABELS, power=1.0, stratified=stratified, seed=5)
    assert prog.balance == 0.0
    assert list(prog) == list(inst)  # epoch 0: instance-balanced
    for epoch in (5, 9):  # last epoch of a 6-epoch run, and clipped after it
        prog.set_epoch(epoch)
        bal.set_epoch(epoch)
        assert prog.balance == 1.0
        assert list(prog) == list(bal)
    if stratified:  # instance-balanced + stratified + num_samples=N is a permutation
        prog.set_epoch(0)
        assert sorted(prog) == list(range(N))


def test_progressive_midway_class_probabilities():
    prog = ProgressiveSampler(LABELS, total_epochs=5, seed=0)
    prog.set_epoch(1)  # a = 1/4
    expected = [0.75 * n / N + 0.25 / 4 for n in COUNTS]
    assert prog.class_probs().tolist() == pytest.approx(expected)


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_state_dict_round_trip_resumes_the_stream(kind, tmp_path):
    first = SAMPLERS[kind](seed=21, num_replicas=2, rank=1)
    first.set_epoch(4)
    torch.save(first.state_dict(), tmp_path / "sampler.pt")
    resumed = SAMPLERS[kind](seed=0, num_replicas=2, rank=1)
    resumed.load_state_dict(torch.load(tmp_path / "sampler.pt"))
    assert resumed.state_dict() == {"epoch": 4, "seed": 21}
    assert list(resumed) == list(first)


def test_dataloader_drives_set_epoch_like_lightning():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    sampler = WeightedClassSampler(LABELS, power=1.0, stratified=True, seed=0)
    loader = DataLoader(torch.arange(N), batch_size=64, sampler=sampler)
    _set_sampler_epoch(loader, 3)
    assert sampler.epoch == 3
    served = torch.cat(list(loader)).tolist()
    assert served == sampler.epoch_sample().tolist()


def test_absent_classes_are_never_drawn():
    labels = np.array([0, 0, 0, 2, 2, 6])  # classes 1, 3, 4, 5 absent
    sample = WeightedClassSampler(
        labels, power=1.0, stratified=True, num_samples=300
    ).epoch_sample()
    assert np.bincount(labels[sample.numpy()], minlength=7).tolist() == [100, 0, 100, 0, 0, 0, 100]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: ShuffleSampler([], seed=0), ValueError, "empty dataset"),
        (lambda: WeightedClassSampler(np.array([0.0, 1.0])), TypeError, "integer class indices"),
        (lambda: WeightedClassSampler(np.zeros((2, 2), int)), ValueError, "1-D"),
        (lambda: WeightedClassSampler(LABELS, power=float("inf")), ValueError, "finite"),
        (lambda: ShuffleSampler(LABELS, num_replicas=2, rank=2), ValueError, "rank"),
        (lambda: ShuffleSampler(LABELS, num_samples=0), ValueError, "num_samples"),
        (
            lambda: ShuffleSampler(LABELS, num_samples=3, num_replicas=4, drop_last=True),
            ValueError,
            "empty",
        ),
        (lambda: ProgressiveSampler(LABELS, total_epochs=1), ValueError, "total_epochs"),
    ],
)
def test_bad_arguments_raise(build, error, match):
    with pytest.raises(error, match=match):
        build()


EXPECTED_CONFIGS = {
    "shuffle": (ShuffleSampler, {}),
    "inverse_frequency": (WeightedClassSampler, {"power": 1.0, "stratified": False}),
    "sqrt_frequency": (WeightedClassSampler, {"power": 0.5, "stratified": True}),
    "class_balanced": (WeightedClassSampler, {"power": 1.0, "stratified": True}),
    "progressive": (ProgressiveSampler, {"total_epochs": 30, "stratified": True}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIGS))
def test_hydra_config_builds_sampler_like_the_datamodule(name):
    cls, attrs = EXPECTED_CONFIGS[name]
    root = OmegaConf.create({"trainer": {"max_epochs": 30}})
    root.sampler = OmegaConf.load(CONF / f"{name}.yaml")  # progressive reads trainer.max_epochs
    assert (CONF / f"{name}.yaml").read_text().startswith("#")
    partial = instantiate(root.sampler)
    sampler = partial(labels=LABELS, seed=3, num_replicas=2, rank=1)
    assert type(sampler) is cls
    assert {k: getattr(sampler, k) for k in attrs} == attrs
    assert len(list(sampler)) == len(sampler) == N // 2
