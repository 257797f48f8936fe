"""Image faults worth a warning before training: near-blank, blurred, dark, odd-shaped images.

Each is a threshold on one statistic of :func:`dermlit.data.image_features.fault_stats`,
chosen to flag the extreme tail only (HAM10000's counts are in the README). cleanvision has
similar checks, but scores each image against the dataset's own distribution and brings its
own decoding pass and dependencies; these four are one number each, computed in the pass
that near-duplicate detection already makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dermlit.data.image_features import FAULT_STATS

NEAR_UNIFORM = "near-blank or near-uniform image"
BLURRED = "extremely blurred image"
DARK = "extremely dark image"
ODD_ASPECT = "not dermoscopy-shaped (aspect ratio)"
FAULTS = (NEAR_UNIFORM, BLURRED, DARK, ODD_ASPECT)


@dataclass(frozen=True)
class FaultThresholds:
    """An image is faulty when (luminance, 0-255, at the working size):

    - near-uniform: luminance standard deviation / mean below ``max_uniform_cv`` (relative, so
      that a dark image is dark, not also uniform; HAM10000's lowest is 0.031);
    - blurred: the standard deviation of its Laplacian is below ``min_sharpness`` (HAM10000's
      lowest is 2.4; a Gaussian blur of sigma 3 px brings every HAM10000 image below 1.6:
      uint8 rounding keeps it above ~1.2);
    - dark: its 95th luminance percentile is below ``max_dark_p95`` (almost nothing bright);
    - odd aspect: longer side / shorter side above ``max_aspect`` (dermoscopes give 1:1 to 3:2).
    """

    max_uniform_cv: float = 0.02
    min_sharpness: float = 1.8
    max_dark_p95: float = 40.0
    max_aspect: float = 2.0


def image_faults(
    image_ids: list[str], stats: np.ndarray, thresholds: FaultThresholds = FaultThresholds()
) -> pd.DataFrame:
    """One row per (image, fault): ``image_id, fault, detail``; rows with NaN stats (images
    that did not decode, already reported as corrupt) are left out."""
    s = pd.DataFrame(stats, columns=list(FAULT_STATS))
    s["image_id"] = image_ids
    s = s.dropna()
    aspect = s[["width", "height"]].max(axis=1) / s[["width", "height"]].min(axis=1).clip(lower=1)
    cv = s["std_luma"] / s["mean_luma"].clip(lower=1)
    tests = {
        NEAR_UNIFORM: (cv < thresholds.max_uniform_cv, "luminance std/mean", cv),
        BLURRED: (s["sharpness"] < thresholds.min_sharpness, "Laplacian std", s["sharpness"]),
        DARK: (s["p95_luma"] < thresholds.max_dark_p95, "95th pct luminance", s["p95_luma"]),
        ODD_ASPECT: (aspect > thresholds.max_aspect, "aspect", aspect),
    }
    rows = []
    for fault, (flag, what, value) in tests.items():
        for image_id, v in zip(s.loc[flag, "image_id"], value[flag], strict=True):
            rows.append((image_id, fault, f"{what} {v:.2f}"))
    return pd.DataFrame(rows, columns=["image_id", "fault", "detail"])
