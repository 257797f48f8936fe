"""Procedural dermoscopy-like images in HAM10000's folder layout: the embedded default dataset.

Why: tests, CI and a first run need data that exists offline on any machine, yet behaves like
HAM10000 where it matters for this project: the same CSV columns, the same class imbalance,
several images per lesion (so lesion-grouped splits matter) and classes that a small CNN can
learn but not perfectly. Each class has a prototype (shape asymmetry, border irregularity,
colours, structures); every lesion mixes its own prototype with a "confuser" class's prototype
by a random weight, so feature distributions of e.g. mel/nv and bkl/akiec overlap.
Rendering is vectorised numpy over coordinate grids built once per image size, plus PIL for
thin structures (dots, vessels, hair): a few ms per 128x96 image on one core.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from fractions import Fraction
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image

from dermlit.constants import CLASSES, HAM10000_CLASS_COUNTS
from dermlit.data.synthetic_render import (  # noqa: F401  (re-exported API)
    PROTOTYPES,
    ClassPrototype,
    Lesion,
    render_lesion,
    sample_lesion,
)

#: Bump whenever the pixels or the CSV a given set of parameters produces change.
GENERATOR_VERSION = 2  # 2: the ``dataset`` column (two fake sources)
MANIFEST_NAME = "synthetic.json"
METADATA_NAME = "HAM10000_metadata.csv"
METADATA_COLUMNS = (
    "lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"
)  # fmt: skip
#: HAM10000's ``dataset`` column in miniature: each lesion comes from one of two fake sources
#: (per-source metrics and the ``by_source`` split have something to split on); drawn from a
#: stream of its own, so the pixels and the other columns are those of generator version 1
SOURCES = ("synth_a", "synth_b")
SOURCE_B_SHARE = 0.35
MIN_IMAGES_PER_CLASS = 3
LOCALIZATIONS = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face",
                 "chest", "foot", "neck", "scalp")  # fmt: skip


def allocate_class_counts(
    n_images: int, class_counts: Mapping[str, int], min_per_class: int = MIN_IMAGES_PER_CLASS
) -> dict[str, int]:
    """Split `n_images` in the proportions of `class_counts` by largest remainder (ties in
    CLASSES order), then lift classes below `min_per_class` by taking from the largest class."""
    if isinstance(n_images, bool) or not isinstance(n_images, Integral) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    unknown = sorted(set(class_counts) - set(CLASSES))
    if unknown:
        raise ValueError(
            f"unknown class(es) {unknown} in class_counts; expected a subset of {CLASSES}"
        )
    if any(int(v) != v or v < 0 for v in class_counts.values()):
        raise ValueError(f"class_counts must be non-negative integers, got {dict(class_counts)}")
    active = [c for c in CLASSES if class_counts.get(c, 0) > 0]
    if not active:
        raise ValueError("class_counts must give at least one class a positive count")
    if n_images < min_per_class * len(active):
        need = f"each of the {len(active)} classes needs at least {min_per_class} images"
        raise ValueError(f"n_images={n_images} is too small: {need}")
    total = sum(class_counts[c] for c in active)
    quota = {c: Fraction(n_images * class_counts[c], total) for c in active}
    alloc = {c: math.floor(q) for c, q in quota.items()}
    by_remainder = sorted(active, key=lambda c: (-(quota[c] - alloc[c]), CLASSES.index(c)))
    for c in by_remainder[: n_images - sum(alloc.values())]:
        alloc[c] += 1
    for c in active:
        while alloc[c] < min_per_class:
            donor = max(active, key=lambda k: (alloc[k], -CLASSES.index(k)))
            alloc[donor] -= 1
            alloc[c] += 1
    return {c: alloc.get(c, 0) for c in CLASSES}


def _plan(n_images: int, seed: int, counts: dict[str, int], max_per_lesion: int):
    """Group each class's images into lesions of 1..max_per_lesion images (HAM10000 has about
    1.34 images per lesion), shuffle lesions across classes, and draw per-lesion metadata."""
    rng = np.random.default_rng([seed, 0])
    sizes = np.arange(1, max_per_lesion + 1)
    probs = 0.3 ** (sizes - 1.0)
    lesions = []
    for dx in CLASSES:
        left = counts[dx]
        while left > 0:
            k = int(min(rng.choice(sizes, p=probs / probs.sum()), left))
            lesions.append((dx, k))
            left -= k
    order = rng.permutation(len(lesions))
    plan = []
    for i in order.tolist():
        dx, k = lesions[i]
        age = float(5 * rng.integers(4, 18))
        sex = "male" if rng.uniform() < 0.54 else "female"
        plan.append((dx, k, age, sex, LOCALIZATIONS[rng.integers(len(LOCALIZATIONS))]))
    return plan


def generate_synthetic_dataset(
    root: str | Path,
    n_images: int = 2000,
    seed: int = 0,
    width: int = 128,
    height: int = 96,
    class_counts: Mapping[str, int] | None = None,
    max_images_per_lesion: int = 3,
    jpeg_quality: int = 90,
) -> Path:
    """Write `HAM10000_metadata.csv` and `images/SYN_*.jpg` into `root` and return `root`.

    Deterministic per seed. Idempotent: the `synthetic.json` manifest is written last, and when
    it already holds the same parameters nothing is regenerated; other parameters regenerate.
    """
    root = Path(root).expanduser()
    if width < 16 or height < 16:
        raise ValueError(f"width and height must be >= 16 px, got {width}x{height}")
    if max_images_per_lesion < 1:
        raise ValueError(f"max_images_per_lesion must be >= 1, got {max_images_per_lesion}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    counts = allocate_class_counts(n_images, class_counts or HAM10000_CLASS_COUNTS)
    params = dict(
        generator_version=GENERATOR_VERSION,
        n_images=int(n_images),
        seed=int(seed),
        width=width,
        height=height,
        class_counts={c: int(n) for c, n in (class_counts or HAM10000_CLASS_COUNTS).items()},
        max_images_per_lesion=max_images_per_lesion,
        jpeg_quality=jpeg_quality,
    )
    manifest = root / MANIFEST_NAME
    if manifest.is_file() and json.loads(manifest.read_text()) == params:
        return root
    _clear_previous(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    plan = _plan(n_images, seed, counts, max_images_per_lesion)
    for n, (dx, k, age, sex, site) in enumerate(plan, start=1):
        lesion = sample_lesion(dx, np.random.default_rng([seed, 1, n]))  # one stream per lesion
        source = SOURCES[int(np.random.default_rng([seed, 3, n]).uniform() < SOURCE_B_SHARE)]
        for view in range(k):
            image_id = f"SYN_{len(rows) + 1:07d}"
            pixels = render_lesion(lesion, np.random.default_rng([seed, 2, n, view]), width, height)
            Image.fromarray(pixels).save(images / f"{image_id}.jpg", quality=jpeg_quality)
            rows.append(
                (f"SYNL_{n:07d}", image_id, dx, "synthetic", f"{age:.1f}", sex, site, source)
            )
    with open(root / METADATA_NAME, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)
    manifest.write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return root


def _clear_previous(root: Path) -> None:
    """Remove what an earlier generation wrote, refusing to touch a folder that holds other
    (e.g. real HAM10000) data: its metadata would name images that are not SYN_*."""
    meta = root / METADATA_NAME
    if meta.is_file():
        with open(meta, newline="") as fh:
            ids = [r.get("image_id") or "" for r in csv.DictReader(fh)]
        foreign = [i for i in ids if not i.startswith("SYN_")]
        if foreign:
            what = f"{METADATA_NAME} that is not synthetic (e.g. image {foreign[0]!r})"
            raise ValueError(f"{root} holds a {what}; refusing to overwrite it")
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
    for old in (root / "images").glob("SYN_*.jpg"):
        old.unlink()
