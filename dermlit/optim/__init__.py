"""Update rules for manual optimization: plain steps, SAM/ASAM, LookSAM and ImbSAM."""

from dermlit.optim.base import Optimization
from dermlit.optim.imbsam import ImbSAM, tail_classes_from_counts
from dermlit.optim.looksam import LookSAM
from dermlit.optim.sam import SAM, frozen_bn_stats

__all__ = [
    "SAM",
    "ImbSAM",
    "LookSAM",
    "Optimization",
    "frozen_bn_stats",
    "tail_classes_from_counts",
]
