"""The trained backbone WITH everything between a decoded image and the run's probabilities.

``dermlit predict`` (eager) and ``dermlit export`` (ONNX) run this one module, so both give the
probabilities that the run's evaluation used: uint8 RGB ``(N, S, S, 3)`` (the cache's resize +
centre crop, done by the caller) -> the run's colour constancy (the module the image cache
applied, ``data/colour_constancy.py``; identity for none) -> float / 255 -> normalise with the run's mean/std -> NCHW
-> backbone, averaged over the run's TTA views (``models/tta.py``: exact flips/rotations, which
export as ONNX ``Slice``/``Transpose``) -> + post-hoc logit bias -> / temperature -> softmax.
This is the order of ``rundir.write_evaluation``: the post-hoc rule adjusts the logits, and the
temperature is fitted on the adjusted validation logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dermlit.constants import NUM_CLASSES
from dermlit.data.colour_constancy import NoColourConstancy
from dermlit.models.tta import TestTimeAugmentation


class DeployableClassifier(nn.Module):
    """``forward(images uint8 (N, S, S, 3)) -> (probs, logits)``, both (N, 7) float32.

    ``logits`` are the calibrated ones, ``(tta_logits + logit_bias) / temperature``; ``probs``
    their softmax. Always in eval mode (BatchNorm uses its running statistics).
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_size: int,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        temperature: float = 1.0,
        logit_bias: Sequence[float] | None = None,
        tta_views: Sequence[str] = ("identity",),
        colour_constancy: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean/std must be 3 values (std > 0): {list(mean)}, {list(std)}")
        bias = [0.0] * NUM_CLASSES if logit_bias is None else [float(b) for b in logit_bias]
        if len(bias) != NUM_CLASSES:
            raise ValueError(f"logit_bias must have {NUM_CLASSES} values, got {len(bias)}")
        self.backbone = backbone
        self.colour_constancy = colour_constancy or NoColourConstancy()
        self.image_size = int(image_size)
        self.temperature = float(temperature)
        self.tta = TestTimeAugmentation(tta_views)
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1))
        self.register_buffer("logit_bias", torch.tensor(bias).view(1, -1))
        self.eval()

    @classmethod
    def from_classifier(
        cls,
        model: nn.Module,
        image_size: int,
        temperature: float = 1.0,
        logit_bias: Sequence[float] | None = None,
        colour_constancy: nn.Module | None = None,
    ) -> DeployableClassifier:
        """From a ``DermClassifier``: its backbone, normalisation buffers and TTA views;
        ``colour_constancy``: the run's (``data.colour_constancy``), which the model never holds."""
        return cls(
            model.backbone,
            image_size,
            model.mean.flatten().tolist(),
            model.std.flatten().tolist(),
            temperature,
            logit_bias,
            model.tta.views,
            colour_constancy,
        )

    def train(self, mode: bool = True) -> DeployableClassifier:
        """Stays in eval mode: a deployed model never updates BatchNorm statistics."""
        return super().train(False)

    @property
    def tta_views(self) -> list[str]:
        return list(self.tta.views)

    def check_input(self, images: Tensor) -> None:
        s = self.image_size
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (s, s, 3):
            raise ValueError(
                f"expected uint8 RGB images of shape (N, {s}, {s}, 3) (shorter side resized "
                f"to {s}, centre-cropped), got {images.dtype} {tuple(images.shape)}"
            )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(images)
        x = self.colour_constancy(images).permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        logits = (self.tta(self.backbone, x).float() + self.logit_bias) / self.temperature
        return logits.softmax(dim=1), logits
