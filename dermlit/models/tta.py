"""Test-time augmentation over exact symmetries of the square image (flips, 90° rotations).

A dermoscopic lesion has no canonical orientation, so its diagnosis is invariant under the
dihedral group of the square; these eight views need no interpolation (no new pixels, no
black corners), unlike Kornia's ``AugmentationSequential``-based TTA, which resamples. The
views' softmax probabilities are averaged and returned as log-probabilities, which the rest of
the pipeline treats as logits (``softmax(log p) = p``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

#: name -> the view of an NCHW batch (H == W for the rotations and transposes)
VIEWS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "rot180": lambda x: x.rot90(2, (-2, -1)),
    "rot270": lambda x: x.rot90(3, (-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "antitranspose": lambda x: x.rot90(2, (-2, -1)).transpose(-2, -1),
}


def mean_probability_logits(logits: Sequence[Tensor]) -> Tensor:
    """The mean of the softmax probabilities of several logit tensors (views, ensemble members)
    as log-probabilities, in float32 (``softmax(log p) = p``; clamped so that log stays finite)."""
    probs = torch.stack([z.float().softmax(dim=1) for z in logits]).mean(0)
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class TestTimeAugmentation(nn.Module):
    """Average a classifier's predictions over ``views`` (names of :data:`VIEWS`).

    With the single view ``identity`` the classifier's logits pass through unchanged.
    """

    __test__ = False  # not a pytest class

    def __init__(self, views: Sequence[str] = ("identity",)) -> None:
        super().__init__()
        views = list(views)
        unknown = [v for v in views if v not in VIEWS]
        if not views or unknown:
            raise ValueError(f"tta.views: unknown {unknown or 'empty list'}; known: {list(VIEWS)}")
        self.views = views

    def forward(self, classify: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        if self.views == ["identity"]:
            return classify(x)
        square = x.shape[-1] == x.shape[-2]
        needs_square = [v for v in self.views if v not in ("identity", "hflip", "vflip", "rot180")]
        if needs_square and not square:
            raise ValueError(f"TTA views {needs_square} need square images, got {tuple(x.shape)}")
        return mean_probability_logits([classify(VIEWS[v](x)) for v in self.views])

    def extra_repr(self) -> str:
        return f"views={self.views}"
