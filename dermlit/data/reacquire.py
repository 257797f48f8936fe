"""Re-acquisition-like copies of an image: how the near-duplicate detector's recall is measured.

A second photograph of one lesion differs by a shift, a rotation by any angle, a mirror, a zoom,
exposure and white balance, and JPEG compression. :func:`reacquire` applies each of these at
random within the ranges of :class:`Reacquisition` (shift >= 10 % of the image, any angle,
zoom +-15 %), filling the uncovered border by reflection (skin continues past the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Reacquisition:
    """The ranges the random changes are drawn from (uniformly)."""

    shift: tuple[float, float] = (0.10, 0.20)  # fraction of width/height, random direction
    zoom: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.7, 1.4)
    gain: tuple[float, float] = (0.75, 1.25)  # exposure
    colour: tuple[float, float] = (0.9, 1.1)  # per-channel gain: white balance
    jpeg_quality: tuple[int, int] = (50, 90)
    mirror_probability: float = 0.5


def reacquire(
    rgb: np.ndarray, rng: np.random.Generator, ranges: Reacquisition = Reacquisition()
) -> tuple[np.ndarray, dict[str, float]]:
    """A changed RGB uint8 copy of ``rgb`` (same size) and the changes drawn."""
    h, w = rgb.shape[:2]
    angle = rng.uniform(0, 360)
    zoom = rng.uniform(*ranges.zoom)
    shift = rng.uniform(*ranges.shift)
    direction = rng.uniform(0, 2 * np.pi)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    matrix[:, 2] += (shift * w * np.cos(direction), shift * h * np.sin(direction))
    out = cv2.warpAffine(
        rgb, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    mirrored = rng.random() < ranges.mirror_probability
    if mirrored:
        out = out[:, ::-1]
    gamma = rng.uniform(*ranges.gamma)
    gain = rng.uniform(*ranges.gain) * rng.uniform(*ranges.colour, size=3)
    out = np.clip((out.astype(np.float32) / 255) ** gamma * gain, 0, 1)
    out = np.ascontiguousarray((out * 255).round().astype(np.uint8))
    quality = int(rng.integers(ranges.jpeg_quality[0], ranges.jpeg_quality[1] + 1))
    ok, buffer = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "OpenCV failed to encode a JPEG"
    out = cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1]
    changes = {"angle": angle, "zoom": zoom, "shift": shift, "mirrored": float(mirrored)}
    changes.update(gamma=gamma, gain=float(gain.mean()), jpeg_quality=quality)
    return np.ascontiguousarray(out), changes
