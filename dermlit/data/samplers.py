"""Epoch-seeded, DDP-aware training samplers for class-imbalanced data.

Why our own: ``torch.utils.data.WeightedRandomSampler`` is neither epoch-seeded nor
distributed, and Lightning's ``DistributedSamplerWrapper`` materialises the wrapped sampler as
a Python list per epoch. These samplers draw the whole epoch with vectorised torch ops.

Determinism: the epoch sample depends only on ``(seed, epoch)`` (mixed by
``numpy.random.SeedSequence``), so a resumed run continues the same stream. Lightning calls
``set_epoch(epoch)`` at each train-epoch start, with the epoch restored from the checkpoint.

Distribution: every rank draws the same epoch sample of ``num_samples`` indices; it is then
PADDED by repeating its head (or, with ``drop_last=True``, TRUNCATED) to a multiple of
``num_replicas``, and rank ``r`` takes positions ``r::num_replicas``. The shards are disjoint
as positions and their union is the epoch sample (plus the padding). Because the samplers
shard themselves, train with ``Trainer(use_distributed_sampler=False)``, or Lightning wraps
them in a ``DistributedSamplerWrapper`` and shards a second time.

Class probabilities, for ``power`` p: P(class c) proportional to n_c^(1 - p). p=0 is
instance-balanced, 0.5 square-root frequency, 1 class-balanced. Two ways to realise them:

- i.i.d. (``stratified=False``): each index drawn independently with replacement, per-sample
  weight n_c^(-p) (what ``WeightedRandomSampler`` does with weights 1/n_c for p=1). Drawn as
  class ~ Categorical(q), then an instance uniformly within the class: the same distribution,
  but O(num_samples) instead of a multinomial over every item.
- stratified (``stratified=True``): class quotas are fixed per epoch by systematic rounding
  (each k_c is floor or ceil of num_samples * q_c, E[k_c] exact), and within a class every
  instance is used floor(k_c / n_c) times, a random subset once more; then the epoch is
  shuffled. Less variance: no class quota noise and no instance drawn 5x while another is
  skipped. With p=0 and num_samples=N this is exactly a permutation.

Config names: ``inverse_frequency`` = p=1 i.i.d. (the common WeightedRandomSampler recipe),
``class_balanced`` = p=1 stratified, ``sqrt_frequency`` = p=0.5 stratified.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

Labels = Sequence[int] | np.ndarray | Tensor


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for (seed, epoch); SeedSequence avoids (0, 1) colliding with (1, 0)."""
    state = np.random.SeedSequence([int(seed) % (1 << 64), int(epoch)]).generate_state(1, np.uint64)
    gen = torch.Generator()
    gen.manual_seed(int(state[0]))
    return gen


class EpochSampler(Sampler[int]):
    """Base: seed/epoch bookkeeping, DDP sharding and state; subclasses draw one epoch."""

    def __init__(
        self,
        num_items: int,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"cannot sample from an empty dataset (num_items={num_items})")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas=}, {rank=}"
            )
        num_samples = num_items if num_samples is None else int(num_samples)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if drop_last and num_samples < num_replicas:
            raise ValueError(f"drop_last with {num_samples=} < {num_replicas=} leaves ranks empty")
        self.num_items = int(num_items)
        self.num_samples = num_samples
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._skip = 0
        per_rank = num_samples / num_replicas
        self._per_rank = math.floor(per_rank) if drop_last else math.ceil(per_rank)

    def _draw(self, generator: torch.Generator) -> Tensor:
        """Return the epoch sample: ``num_samples`` int64 indices into the dataset."""
        raise NotImplementedError

    def epoch_sample(self) -> Tensor:
        """The full (all-rank, unpadded) sample of the current epoch."""
        return self._draw(_epoch_generator(self.seed, self.epoch))

    def shard(self, sample: Tensor) -> Tensor:
        """This rank's positions of ``sample`` after padding/truncation (see module docstring)."""
        total = self._per_rank * self.num_replicas
        if total > sample.numel():
            reps = math.ceil(total / sample.numel())
            sample = sample.repeat(reps)
        return sample[:total][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        return iter(self.shard(self.epoch_sample())[skip:].tolist())

    def skip_next(self, n: int) -> None:
        """Leave out the first ``n`` of this rank's indices in the next iteration only: resuming
        a mid-epoch checkpoint continues that epoch's stream (dermlit/callbacks/preemption.py).
        ``len()`` stays the full epoch's, as Lightning counts the batches already done."""
        if not 0 <= n <= self._per_rank:
            raise ValueError(f"can skip 0..{self._per_rank} indices of this epoch, got {n}")
        self._skip = int(n)

    def __len__(self) -> int:
        return self._per_rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Epoch and seed: all that determines the stream (the mid-epoch position is restored
        from Lightning's loop progress instead, see :meth:`skip_next`)."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epoch = int(state_dict["epoch"])
        self.seed = int(state_dict["seed"])


class ShuffleSampler(EpochSampler):
    """Plain shuffling; beyond one pass, whole permutations are concatenated."""

    def __init__(self, labels: Labels, **kwargs: Any) -> None:
        super().__init__(len(labels), **kwargs)

    def _draw(self, generator: torch.Generator) -> Tensor:
        reps = math.ceil(self.num_samples / self.num_items)
        perms = [torch.randperm(self.num_items, generator=generator) for _ in range(reps)]
        return torch.cat(perms)[: self.num_samples]


def _encode_labels(labels: Labels) -> tuple[Tensor, Tensor]:
    """Dense codes of the classes present (absent classes can't be sampled) and their counts."""
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be integer class indices, got dtype {arr.dtype}")
    _, codes, counts = np.unique(arr, return_inverse=True, return_counts=True)
    return torch.from_numpy(codes.astype(np.int64)), torch.from_numpy(counts.astype(np.int64))


def _systematic_quotas(probs: Tensor, total: int, generator: torch.Generator) -> Tensor:
    """Integer counts summing to ``total``, each floor or ceil of total*p, unbiased."""
    cum = torch.cumsum(probs * total, 0)
    cum[-1] = total
    snapped = cum.round()
    cum = torch.where((cum - snapped).abs() < 1e-6, snapped, cum)  # exact quotas stay exact
    offset = torch.rand(1, generator=generator, dtype=torch.float64)
    edges = torch.floor(cum + offset).long()
    return torch.diff(edges, prepend=torch.zeros(1, dtype=torch.long))


class _ClassProbabilitySampler(EpochSampler):
    """Draws an epoch given class probabilities ``class_probs()`` (see module docstring)."""

    def __init__(self, labels: Labels, *, stratified: bool, **kwargs: Any) -> None:
        codes, counts = _encode_labels(labels)
        super().__init__(codes.numel(), **kwargs)
        self.stratified = bool(stratified)
        self._codes = codes
        self._counts = counts
        self._order = torch.argsort(codes, stable=True)  # item ids grouped by class
        self._starts = torch.cumsum(counts, 0) - counts

    def class_probs(self) -> Tensor:
        """float64 probabilities over the classes present, for the current epoch."""
        raise NotImplementedError

    def _draw(self, generator: torch.Generator) -> Tensor:
        probs = self.class_probs()
        if self.stratified:
            return self._draw_stratified(probs, generator)
        classes = torch.multinomial(probs, self.num_samples, replacement=True, generator=generator)
        n = self._counts[classes]
        u = torch.rand(self.num_samples, generator=generator, dtype=torch.float64)
        offset = torch.minimum((u * n).long(), n - 1)
        return self._order[self._starts[classes] + offset]

    def _draw_stratified(self, probs: Tensor, generator: torch.Generator) -> Tensor:
        quotas = _systematic_quotas(probs, self.num_samples, generator)
        base, extra = quotas // self._counts, quotas % self._counts
        # Items grouped by class, in random order within each class: one sort on class + U[0, 1).
        keys = self._codes.double() + torch.rand(
            self.num_items, generator=generator, dtype=torch.float64
        )
        items = torch.argsort(keys)
        cls = self._codes[items]
        rank_in_class = torch.arange(self.num_items) - self._starts[cls]
        multiplicity = base[cls] + (rank_in_class < extra[cls]).long()
        sample = torch.repeat_interleave(items, multiplicity)
        return sample[torch.randperm(sample.numel(), generator=generator)]


class WeightedClassSampler(_ClassProbabilitySampler):
    """P(class c) proportional to n_c^(1 - power): 0 instance-, 0.5 sqrt-, 1 class-balanced."""

    def __init__(
        self, labels: Labels, power: float = 1.0, *, stratified: bool = False, **kwargs: Any
    ) -> None:
        if not math.isfinite(power):
            raise ValueError(f"power must be finite, got {power}")
        super().__init__(labels, stratified=stratified, **kwargs)
        self.power = float(power)
        weights = self._counts.double().pow(1.0 - self.power)
        self._probs = weights / weights.sum()

    def class_probs(self) -> Tensor:
        return self._probs


class ProgressiveSampler(_ClassProbabilitySampler):
    """Progressively-balanced sampling (Kang et al. 2020, "Decoupling Representation and
    Classifier"): q(t) = (1 - a) * n_c / N + a / C with a = t / (total_epochs - 1), clipped to 1.

    Epoch 0 is instance-balanced and the last epoch of a ``max_epochs=total_epochs`` run
    (t = total_epochs - 1) is class-balanced.
    """

    def __init__(
        self, labels: Labels, total_epochs: int, *, stratified: bool = True, **kwargs: Any
    ) -> None:
        if total_epochs < 2:
            raise ValueError(f"total_epochs must be >= 2 to interpolate, got {total_epochs}")
        super().__init__(labels, stratified=stratified, **kwargs)
        self.total_epochs = int(total_epochs)
        counts = self._counts.double()
        self._instance = counts / counts.sum()
        self._uniform = torch.ones_like(counts) / counts.numel()

    @property
    def balance(self) -> float:
        """a in [0, 1]: 0 instance-balanced, 1 class-balanced."""
        return min(1.0, self.epoch / (self.total_epochs - 1))

    def class_probs(self) -> Tensor:
        a = self.balance
        return (1.0 - a) * self._instance + a * self._uniform
