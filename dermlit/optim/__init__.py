"""Update rules for manual optimization: plain steps, SAM/ASAM, LookSAM and ImbSAM.

conf/ targets the defining modules (``dermlit.optim.sam.SAM``); these names stay importable
from the package for code and for run directories written before (``.hydra/resolved.yaml``).
"""

from dermlit.optim.base import Optimization, UpdateRule
from dermlit.optim.imbsam import ImbSAM, tail_classes_from_counts
from dermlit.optim.looksam import LookSAM
from dermlit.optim.sam import SAM, frozen_bn_stats

__all__ = [
    "SAM",
    "ImbSAM",
    "LookSAM",
    "Optimization",
    "UpdateRule",
    "frozen_bn_stats",
    "tail_classes_from_counts",
]
