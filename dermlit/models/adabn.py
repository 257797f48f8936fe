"""Test-time BatchNorm re-estimation on the target images (AdaBN, Li et al. 2016, "Revisiting
batch normalization for practical domain adaptation").

A network's BatchNorm layers normalise with the TRAINING images' feature statistics; another
clinic's camera shifts them, and every later layer sees inputs off its training range. AdaBN
replaces each BN layer's running mean/variance by the target images' own, keeping every learned
weight. Here: ONE pass over the target (test) images WITHOUT gradient and WITHOUT labels, the
model in eval mode (dropout / drop-path off: the features the network computes at test time)
and only its BatchNorm layers in train mode; a forward pre-hook on each BN layer pools the
per-channel count, mean and squared deviations of its input over ALL the images, and the
running statistics become that exact mean and unbiased variance. It works on a COPY of the
model: the run's checkpoint and the in-memory model that predicts validation (source data,
whose statistics stay the training ones) are untouched. Opt-in: ``evaluation.adabn=true``
(dermlit-eval, end of dermlit-train).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dermlit.errors import InputError
from dermlit.models.copies import detached_copy

BatchNorm = nn.modules.batchnorm._BatchNorm


def batchnorm_layers(model: nn.Module) -> list[BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BatchNorm)]


class _PooledMoments:
    """Per-channel count, mean and sum of squared deviations of one BN layer's inputs, pooled
    over batches exactly (Chan et al.'s pairwise update, in float64): each batch weighs by its
    number of values, and the between-batch spread of the means is part of the variance."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.calls = 0

    def add(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.size(1)
        var, mean = torch.var_mean(x.detach().float(), dim=dims, unbiased=False)
        mean, m2 = mean.double(), var.double() * n
        self.calls += 1
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.n * n / total)
        self.n = total

    def statistics(self) -> tuple[Tensor, Tensor] | None:
        """(mean, unbiased variance, as BN's running_var), or None under two values."""
        if self.n < 2 or self.mean is None or self.m2 is None:
            return None
        return self.mean, self.m2 / (self.n - 1)


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[nn.Module, int]:
    """A copy of ``model`` (a ``DermClassifier``: uint8 HWC batches are converted and normalised
    by its ``prepare``, never augmented) whose BN statistics are those of the images of
    ``loader``; returns (copy, images seen). Refuses a model without BatchNorm.

    What it computes: in one pass, the model in eval mode and every ``_BatchNorm`` layer
    (BatchNorm1d/2d/3d, SyncBatchNorm, timm's BatchNormAct2d; other norms untouched) in train
    mode, each BN layer's running mean and running variance become the exact per-channel mean
    and UNBIASED variance (what BN stores as running_var) of its inputs over ALL the images, each
    image weighing the same whatever its batch. For the first BN layer that is exactly the
    target features' statistics; a deeper layer's inputs are, within the pass, normalised by
    the earlier layers' batch statistics (train mode, as standard AdaBN and PyTorch's
    cumulative average do; an exact fixed point would need one pass per layer), so they depend
    mildly on the batch size.

    Why not the library: PyTorch's ``momentum=None`` cumulative average averages per-BATCH
    means and per-batch unbiased variances unweighted (a last batch of one image weighs as much
    as a full one; the between-batch spread of the means is lost), train mode fails on one
    value per channel, and ``model.train()`` would turn dropout / drop-path on (the statistics
    of randomly dropped branches, different on every call); neither torch nor timm has a
    test-time BN re-estimation. A batch with one value per channel at some BN layer (one image
    and a 1x1 map) cannot be normalised by its own statistics: that layer normalises it, in
    the pass, with the statistics pooled so far (the layer's training ones if none yet), and
    its value still counts in the pooled statistics."""
    layers = batchnorm_layers(model)
    if not layers:
        raise InputError(
            f"evaluation.adabn=true re-estimates BatchNorm statistics, but the model "
            f"({type(getattr(model, 'backbone', model)).__name__}) has no BatchNorm layer: "
            "switch it off (evaluation.adabn=false)"
        )
    adapted = detached_copy(model).to(device)
    adapted.eval()  # dropout, drop-path and every other layer as at test time
    tracked = [bn for bn in batchnorm_layers(adapted) if bn.running_mean is not None]
    moments = {bn: _PooledMoments() for bn in tracked}
    source = {bn: (bn.running_mean.clone(), bn.running_var.clone()) for bn in tracked}

    def before(bn: BatchNorm, args: tuple) -> None:
        x = args[0]
        if x.numel() // x.size(1) < 2:  # train mode cannot normalise a single value
            pooled = moments[bn].statistics()
            mean, var = pooled if pooled is not None else source[bn]
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.training = False
        moments[bn].add(x)

    def after(bn: BatchNorm, _args: tuple, _output: Tensor) -> None:
        bn.training = True

    handles = []
    for bn in tracked:
        bn.training = True  # not bn.train(): that would recurse into e.g. BatchNormAct's drop
        handles.append(bn.register_forward_pre_hook(before))
        handles.append(bn.register_forward_hook(after))
    seen = 0
    try:
        for images, _targets in loader:  # the labels are never read
            adapted(adapted.prepare(images.to(device), augment=False))
            seen += len(images)
    finally:
        for handle in handles:
            handle.remove()
        adapted.eval()
    if seen == 0:
        raise InputError("evaluation.adabn=true: the target split has no images")
    for bn in tracked:
        if moments[bn].calls == 0:  # a layer the forward never reaches keeps its statistics
            bn.running_mean.copy_(source[bn][0])
            bn.running_var.copy_(source[bn][1])
            continue
        pooled = moments[bn].statistics()
        if pooled is None:
            raise InputError(
                f"evaluation.adabn=true: a BatchNorm layer sees one value per channel over all "
                f"{seen} target images (one image, a 1x1 feature map): its variance is "
                "undefined; switch AdaBN off or evaluate more images"
            )
        bn.running_mean.copy_(pooled[0])
        bn.running_var.copy_(pooled[1])
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.fill_(moments[bn].calls)
    return adapted, seen


def adabn_note(n_images: int) -> str:
    return (
        f"AdaBN applied (evaluation.adabn=true): every BatchNorm layer's running mean and "
        f"variance were re-estimated on the {n_images} unlabelled test images (one forward "
        "pass without gradient or augmentation, dropout off, each image weighing the same) "
        "before these predictions; the checkpoint is unchanged, and validation (temperature, "
        "post-hoc rule) used the training statistics."
    )
