"""One decoding pass per image for ``dermlit data check``: what near-duplicate detection and the
image-fault checks need, in fixed-size arrays (memory: about 25 KB per image).

Per image, at a working size (shorter side :data:`WORK_SIDE` px, as HAM10000 ships):

- a **global descriptor** that a re-acquisition does not change: histograms of the per-channel
  z-scored log intensities (a per-channel gain and gamma, i.e. exposure and white balance, are
  an affine map of log intensity, which the z-score removes), of the gradient magnitude and of
  the chromaticity, plus the channel correlations. Histograms ignore where a pixel is, so a
  shift, a rotation by any angle and a mirror leave them nearly unchanged.
- **ORB keypoints and binary descriptors** of the image and of its mirror image (ORB is
  rotation- and scale-invariant but not mirror-invariant), computed after a Gaussian blur that
  removes the JPEG 8x8 block corners (without it, unrelated images matched on the block grid)
  and CLAHE (dermoscopy is smooth; few corners survive without local contrast).
- a half-size blurred grey image, to check an estimated alignment pixel by pixel (NCC).
- the statistics of the image faults (:mod:`dermlit.data.image_faults`).

OpenCV is used because neither scikit-image nor Kornia ships a fast ORB + RANSAC; imagehash's
perceptual hashes are whole-image and were measured to miss re-acquisitions (README).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

#: the working image's shorter side (HAM10000's 200x150 is used as it is)
WORK_SIDE = 150
#: ORB keypoints per image (and per mirror image)
N_FEATURES = 300
DESC_BYTES = 32
HIST_BINS = 24
GRAD_BINS = 16
CHROMA_BINS = 8
DESCRIPTOR_DIM = 3 * HIST_BINS + GRAD_BINS + CHROMA_BINS**2 + 3
#: image-fault statistics, in this column order (see image_faults.py)
FAULT_STATS = ("width", "height", "mean_luma", "p95_luma", "std_luma", "sharpness")

cv2.setNumThreads(1)  # we parallelise over images; OpenCV's own threads would oversubscribe


@dataclass
class ImageFeatures:
    """Features of N images, row i = image i; ``ok[i]`` False where the image did not decode."""

    descriptor: np.ndarray  # (N, DESCRIPTOR_DIM) float32
    points: np.ndarray  # (N, 2 orientations, N_FEATURES, 2) float32, full working resolution
    binary: np.ndarray  # (N, 2, N_FEATURES, DESC_BYTES) uint8
    n_points: np.ndarray  # (N, 2) int16
    grey: list[np.ndarray]  # half-size blurred grey uint8 per image (shapes may differ)
    stats: np.ndarray  # (N, len(FAULT_STATS)) float32
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str]

    def __len__(self) -> int:
        return len(self.ok)


def read_working_image(path: str) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB uint8 with shorter side :data:`WORK_SIDE` (never upscaled) and the original size."""
    with Image.open(path) as img:
        size = img.size
        img.draft("RGB", (WORK_SIDE, WORK_SIDE))  # cheap JPEG downscaling for large images
        img = img.convert("RGB")
        scale = WORK_SIDE / min(img.size)
        if scale < 1:
            new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(img), size


#: log(v + 8) of every uint8 value: a table look-up instead of a transcendental per pixel
_LOG = np.log(np.arange(256, dtype=np.float32) + 8.0)


def _histogram(values: np.ndarray, bins: int, lo: float, hi: float) -> np.ndarray:
    idx = np.clip(((values - lo) * (bins / (hi - lo))).astype(np.int32), 0, bins - 1)
    return np.bincount(idx.ravel(), minlength=bins).astype(np.float32)


def global_descriptor(rgb: np.ndarray) -> np.ndarray:
    """The photometric- and geometry-invariant histogram descriptor (module docstring)."""
    small = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    z = _LOG[small].reshape(-1, 3)
    z = (z - z.mean(0)) / (z.std(0) + 1e-3)
    n = len(z)
    parts = [_histogram(z[:, c], HIST_BINS, -3, 3) / n for c in range(3)]
    grey = z.mean(1).reshape(small.shape[:2])
    grey = cv2.GaussianBlur(grey, (0, 0), 1.0)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    parts.append(_histogram(np.sqrt(gx**2 + gy**2), GRAD_BINS, 0, 3) / n)
    d1, d2 = z[:, 2] - z[:, 1], z[:, 1] - z[:, 0]
    q1 = np.clip(((d1 + 2) * CHROMA_BINS / 4).astype(np.int32), 0, CHROMA_BINS - 1)
    q2 = np.clip(((d2 + 2) * CHROMA_BINS / 4).astype(np.int32), 0, CHROMA_BINS - 1)
    parts.append(np.bincount(q1 * CHROMA_BINS + q2, minlength=CHROMA_BINS**2) / n)
    hist = np.sqrt(np.concatenate(parts))  # Hellinger: histograms compare by sqrt
    corr = (z[:, [0, 0, 1]] * z[:, [1, 2, 2]]).mean(0) * 0.3
    return np.concatenate([hist, corr]).astype(np.float32)


def orb_features(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(points (n, 2), packed descriptors (n, 32))`` of a blurred+CLAHE grey image. The CLAHE
    object is made per call: OpenCV's keeps buffers, and one shared by the feature threads gave
    other features from run to run (and now and then an assertion error for one image)."""
    orb = cv2.ORB_create(
        nfeatures=N_FEATURES, nlevels=5, edgeThreshold=15, patchSize=15, fastThreshold=8
    )
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    keypoints, desc = orb.detectAndCompute(clahe.apply(grey), None)
    if desc is None:
        return np.zeros((0, 2), np.float32), np.zeros((0, DESC_BYTES), np.uint8)
    points = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
    return points[:N_FEATURES], desc[:N_FEATURES]


def fault_stats(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Width, height, luminance mean/95th percentile/std, and sharpness: the standard deviation
    of the Laplacian of the luminance at the working size (low = blurred)."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(luma, cv2.CV_32F).std())
    counts = np.cumsum(np.bincount(luma.ravel(), minlength=256))
    p95 = float(np.searchsorted(counts, 0.95 * counts[-1]))
    mean, std = cv2.meanStdDev(luma)
    return np.array([*size, mean.item(), p95, std.item(), sharpness], np.float32)


def extract_one(path: str) -> tuple:
    rgb, size = read_working_image(path)
    grey = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (0, 0), 1.0)
    orig = orb_features(grey)
    mirror = orb_features(np.ascontiguousarray(grey[:, ::-1]))
    half = cv2.resize(grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return global_descriptor(rgb), (orig, mirror), half, fault_stats(rgb, size)


def extract_features(paths: list[str], workers: int = 2) -> ImageFeatures:
    """Decode every image once and compute its features, ``workers`` threads (OpenCV and
    numpy release the GIL). An image that fails to decode gets ``ok=False`` and its error."""
    n = len(paths)
    feats = ImageFeatures(
        descriptor=np.zeros((n, DESCRIPTOR_DIM), np.float32),
        points=np.zeros((n, 2, N_FEATURES, 2), np.float32),
        binary=np.zeros((n, 2, N_FEATURES, DESC_BYTES), np.uint8),
        n_points=np.zeros((n, 2), np.int16),
        grey=[np.zeros((1, 1), np.uint8)] * n,
        stats=np.full((n, len(FAULT_STATS)), np.nan, np.float32),
        ok=np.zeros(n, bool),
        errors={},
    )

    def work(i: int) -> None:
        try:
            desc, orbs, half, stats = extract_one(paths[i])
        except (OSError, ValueError, SyntaxError, cv2.error) as err:
            feats.errors[i] = f"{type(err).__name__}: {err}"
            return
        feats.descriptor[i], feats.grey[i], feats.stats[i] = desc, half, stats
        for o, (points, binary) in enumerate(orbs):
            feats.points[i, o, : len(points)] = points
            feats.binary[i, o, : len(binary)] = binary
            feats.n_points[i, o] = len(points)
        feats.ok[i] = True

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(n)))
    if feats.errors:
        log.warning("%d image(s) could not be decoded for the pixel checks", len(feats.errors))
    return feats
