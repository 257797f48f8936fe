"""Grad-CAM of the errors a reviewer should see first: rare classes called common, and the most
confident errors (at most :data:`MAX_IMAGES` in all, so a report stays cheap to build).

Built by ``dermlit-train`` and ``dermlit-eval`` from a checkpoint (a predictions-only
evaluation has no weights); ``rundir.write_evaluation`` calls it between the analysis and the
report. The map explains the DECIDED class (the argmax after the post-hoc rule) on the
un-augmented image (TTA views are not explained one by one).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from dermlit.constants import CLASSES
from dermlit.models.ensemble import SnapshotEnsemble

log = logging.getLogger(__name__)
#: the Grad-CAM layer is the last feature stage with at least this many cells per side
MIN_CAM_CELLS = 4
#: images in the gallery: rare-called-common errors first, then the most confident others
MAX_IMAGES = 12
MAX_RARE = 6


@dataclass
class ErrorExplanations:
    """One row per explained error (report gallery, W&B table)."""

    image_ids: list[str]
    images: np.ndarray  # uint8 (n, S, S, 3), the model's input
    overlays: np.ndarray  # uint8 (n, S, S, 3), Grad-CAM of the decided class blended in
    truth: list[str]
    predicted: list[str]
    probs: np.ndarray  # (n, 7) in CLASSES order
    kinds: list[str]  # "rare called common" | "confident error"
    layer: str = ""  # the backbone module Grad-CAM used


def cam_layer(backbone: nn.Module, image_size: int, min_cells: int = MIN_CAM_CELLS) -> str | None:
    """The last timm feature stage whose map is at least ``min_cells`` wide at ``image_size``
    (ResNet-18: ``layer4`` from 128 px, ``layer3`` at 64 px, ``layer2`` at 32 px), or None (the
    default of ``saliency.target_layer``) for models without ``feature_info``. At 32 px input
    ResNet's ``layer4`` is 1x1: its map is uniform, min-max scaled to all zeros."""
    info = getattr(backbone, "feature_info", None)
    stages = (
        [f for f in info if "module" in f and "reduction" in f] if isinstance(info, list) else []
    )
    if not stages:
        return None
    fitting = [f for f in stages if image_size // int(f["reduction"]) >= min_cells]
    return str((fitting or stages[:1])[-1]["module"])


def cam_layers(backbone: nn.Module, image_size: int) -> list[str] | None:
    """:func:`cam_layer` of the backbone, or of every member of a snapshot ensemble (one map
    over all of them: pytorch-grad-cam averages the layers' maps), or None (the last Conv2d)."""
    if isinstance(backbone, SnapshotEnsemble):
        names = [cam_layer(m, image_size) for m in backbone.members]
        if any(n is None for n in names):
            return None
        return [f"members.{i}.{n}" for i, n in enumerate(names)]
    name = cam_layer(backbone, image_size)
    return None if name is None else [name]


def select_errors(
    probs: np.ndarray,
    targets: np.ndarray,
    common: Sequence[str],
    max_images: int = MAX_IMAGES,
    max_rare: int = MAX_RARE,
) -> list[tuple[int, str]]:
    """(row, kind): the most confident rare-called-common errors (up to ``max_rare``), then the
    most confident remaining errors up to ``max_images``, each labelled with its own kind (a
    rare-called-common error past the cap is still one); labelled rows only."""
    p, t = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    pred = p.argmax(1)
    wrong = (t >= 0) & (pred != t)
    is_common = np.isin(np.asarray(CLASSES), list(common))
    rare_common = wrong & ~is_common[np.maximum(t, 0)] & is_common[pred]
    confidence = p.max(1)
    order = np.argsort(-confidence, kind="stable")
    rare = [int(i) for i in order if rare_common[i]][:max_rare]
    chosen = [(i, "rare called common") for i in rare]
    taken = set(rare)
    for i in order:
        if len(chosen) >= max_images:
            break
        if wrong[i] and int(i) not in taken:
            kind = "rare called common" if rare_common[i] else "confident error"
            chosen.append((int(i), kind))
    return chosen


class ErrorExplainer:
    """``backbone`` (trained weights), the run's normalisation and ``images(rows)`` -> uint8."""

    def __init__(
        self,
        backbone: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        images: Callable[[Sequence[int]], np.ndarray],
        max_images: int = MAX_IMAGES,
    ) -> None:
        self.backbone, self.mean, self.std = backbone, list(mean), list(std)
        self.images, self.max_images = images, max_images

    def __call__(
        self, probs: np.ndarray, targets: np.ndarray, image_ids: Sequence[str], common
    ) -> ErrorExplanations | None:
        chosen = select_errors(probs, targets, common, self.max_images)
        if not chosen:
            return None
        try:
            from dermlit.explain.saliency import grad_cam, overlay  # pytorch-grad-cam: an extra
        except ImportError as err:
            log.warning("no Grad-CAM gallery: %s (pip install 'dermlit[explain]')", err)
            return None

        rows = [i for i, _ in chosen]
        pixels = np.asarray(self.images(rows), dtype=np.uint8)
        p = np.asarray(probs)[rows]
        pred = p.argmax(1)
        # a float32 CPU copy: the trained module may be double (64-true), half, on a GPU or
        # channels_last, and the run's own module is left untouched
        backbone = copy.deepcopy(self.backbone).float().cpu()
        names = cam_layers(backbone, pixels.shape[1])
        layers = None if names is None else [backbone.get_submodule(n) for n in names]
        try:
            maps = grad_cam(backbone, pixels, self.mean, self.std, pred.tolist(), layers)
        except Exception as err:  # an optional gallery never costs the run its evaluation
            log.warning("no Grad-CAM gallery: %s: %s", type(err).__name__, err, exc_info=True)
            return None
        return ErrorExplanations(
            image_ids=[str(image_ids[i]) for i in rows],
            images=pixels,
            overlays=np.stack([overlay(img, m) for img, m in zip(pixels, maps, strict=True)]),
            truth=[CLASSES[int(targets[i])] for i in rows],
            predicted=[CLASSES[int(c)] for c in pred],
            probs=p,
            kinds=[k for _, k in chosen],
            layer=", ".join(names) if names else "last Conv2d",
        )


def split_explainer(model: nn.Module, datamodule, split: str) -> ErrorExplainer:
    """For a ``DermClassifier`` (its backbone and normalisation) on ``split`` of a datamodule."""
    return ErrorExplainer(
        model.backbone,
        model.mean.flatten().tolist(),
        model.std.flatten().tolist(),
        dataset_images(datamodule.dataset(split)),
    )


def dataset_images(dataset) -> Callable[[Sequence[int]], np.ndarray]:
    """Rows of a ``CachedImageDataset`` (the split's order, as SplitOutputs) as uint8 HWC."""
    return lambda rows: np.stack([dataset[int(i)][0].numpy() for i in rows])


def explanation_figure(ex: ErrorExplanations):
    """Pairs (input | Grad-CAM overlay), titled with truth -> decision and its probability."""
    import matplotlib.pyplot as plt

    n = len(ex.image_ids)
    cols = 4  # two pairs per row
    rows = (n + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.1, rows * 2.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        a, b = axes.flat[2 * k], axes.flat[2 * k + 1]
        a.imshow(ex.images[k])
        b.imshow(ex.overlays[k])
        c = CLASSES.index(ex.predicted[k])
        a.set_title(f"{ex.image_ids[k]}\n{ex.truth[k]} -> {ex.predicted[k]}", fontsize=7)
        b.set_title(f"p={ex.probs[k, c]:.2f}, {ex.kinds[k]}", fontsize=7)
    fig.tight_layout()
    return fig
