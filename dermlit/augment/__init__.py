"""On-device augmentation presets (Kornia) and the lesion features that audit them."""

from dermlit.augment.effects import RandomVignette
from dermlit.augment.morphology import lesion_features
from dermlit.augment.presets import DermoscopyAugment, KorniaPreset, NoAugment, StandardAugment

__all__ = [
    "DermoscopyAugment",
    "KorniaPreset",
    "NoAugment",
    "RandomVignette",
    "StandardAugment",
    "lesion_features",
]
