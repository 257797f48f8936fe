"""``dermlit augment-audit``: measure how much each augmentation preset changes lesion features.

On N real HAM10000 images with their segmentation masks, every preset moves image and mask with
one geometric transform; ``dermlit.augment.morphology`` measures the lesion before and after.
Per preset and feature it reports the median and 95th percentile of the relative change
``|f_aug - f_orig| / max(|f_orig|, floor)`` (floors in ``REL_FLOOR``), and the share of
augmented lesions whose mean colour leaves the real range: per CIELAB channel, the 0.5-99.5
percentile of per-lesion mean colour over the un-augmented reference images. The same test on
the un-augmented audit images gives the floor that a perfect augmentation would still show.
Outputs: ``audit.md`` (table), ``audit.json``, ``gallery.png``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from dermlit.augment.gallery import write_gallery
from dermlit.augment.morphology import lesion_features
from dermlit.config import compose_config, group_options
from dermlit.errors import InputError, exit_with

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = Path(
    os.environ.get("DERMLIT_HAM10000", REPO_ROOT.parent / "shared/data/ham10000-200x150")
)
DEFAULT_CONF = REPO_ROOT / "conf" / "augment"
#: Features whose relative change is reported, with the denominator floor that keeps a
#: near-zero original value (a very symmetric lesion, a one-colour lesion) from dividing by ~0.
REL_FLOOR: dict[str, float] = {
    "area": 1.0,
    "asymmetry": 0.05,
    "compactness": 1.0,
    "colour_spread": 1.0,
    "n_colours": 1.0,
}
COLOUR_CHANNELS = ("mean_L", "mean_a", "mean_b")
RANGE_PERCENTILES = (0.5, 99.5)
MASK_THRESHOLD = 128


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's options on ``parser``."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HAM10000 directory")
    parser.add_argument("--n", type=int, default=500, help="number of audited images")
    parser.add_argument("--presets", nargs="+", default=["dermoscopy", "standard"])
    parser.add_argument("--out", type=Path, default=Path("augment-audit"), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128, help="square side the images are cut to")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--reference-n",
        type=int,
        default=0,
        help="images that define the real colour range (0: the whole dataset)",
    )
    parser.add_argument("--gallery-per-class", type=int, default=1)
    parser.add_argument("--conf-dir", type=Path, default=DEFAULT_CONF, help="conf/augment folder")


def load_batch(data: Path, image_ids: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) in [0, 1] and masks (B, 1, S, S): centre square, then resized.

    The mask is binarised at 128 at full resolution, then area-resized, so its boundary
    pixels hold the fraction of the pixel the lesion covers.
    """
    images, masks = [], []
    for image_id in image_ids:
        img = np.asarray(Image.open(data / "images" / f"{image_id}.jpg").convert("RGB"))
        msk = np.asarray(Image.open(data / "masks" / f"{image_id}_segmentation.png").convert("L"))
        images.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy((msk >= MASK_THRESHOLD).astype(np.uint8))[None])
    img_t = torch.stack(images).float() / 255
    msk_t = torch.stack(masks).float()
    h, w = img_t.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img_t = img_t[..., top : top + side, left : left + side]
    msk_t = msk_t[..., top : top + side, left : left + side]
    img_t = F.interpolate(img_t, size=(size, size), mode="bilinear", antialias=True)
    msk_t = F.interpolate(msk_t, size=(size, size), mode="area")
    return img_t.clamp(0, 1), msk_t.clamp(0, 1)


def load_preset(name: str, conf_dir: Path) -> torch.nn.Module:
    """Option ``name`` of the ``augment`` group in ``conf_dir`` (a ``conf/augment`` folder),
    composed by Hydra as ``dermlit-train augment=NAME`` would."""
    root = Path(conf_dir).resolve().parent
    known = group_options("augment", root)
    if name not in known:
        raise InputError(f"unknown augment preset {name!r}; known: {known}")
    return instantiate(compose_config(None, [f"+augment={name}"], root).augment)


def _features(images: torch.Tensor, masks: torch.Tensor, batch: int) -> dict[str, np.ndarray]:
    parts = [
        lesion_features(images[i : i + batch], masks[i : i + batch])
        for i in range(0, len(images), batch)
    ]
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def reference_range(data: Path, ids: list[str], size: int, batch: int) -> dict:
    """The real colour range, from the per-lesion mean CIELAB colour of the images ``ids``.

    Two definitions: ``box`` is the RANGE_PERCENTILES interval per channel; ``ellipsoid`` is the
    Mahalanobis ball (mean, inverse covariance) that holds RANGE_PERCENTILES[1]% of the real
    lesions. The ellipsoid is the primary one: a box of three 1%-tails already leaves about 2.5%
    of real lesions outside, which would hide what an augmentation adds.
    """
    parts = []
    for i in range(0, len(ids), batch):
        imgs, msks = load_batch(data, ids[i : i + batch], size)
        feats = _features(imgs, msks, batch)
        parts.append(np.stack([feats[c] for c in COLOUR_CHANNELS], axis=1))
    lab = np.concatenate(parts).astype(np.float64)
    mean = lab.mean(axis=0)
    inv_cov = np.linalg.inv(np.cov(lab, rowvar=False))
    dist = np.sqrt(np.einsum("ni,ij,nj->n", lab - mean, inv_cov, lab - mean))
    return {
        "box": {
            c: np.percentile(lab[:, j], RANGE_PERCENTILES).tolist()
            for j, c in enumerate(COLOUR_CHANNELS)
        },
        "ellipsoid": {
            "mean": mean.tolist(),
            "inv_cov": inv_cov.tolist(),
            "radius": float(np.percentile(dist, RANGE_PERCENTILES[1])),
        },
    }


def outside_range(feats: dict[str, np.ndarray], bounds: dict) -> dict[str, np.ndarray]:
    """Per lesion: outside the ``ellipsoid`` and outside the per-channel ``box``."""
    lab = np.stack([feats[c] for c in COLOUR_CHANNELS], axis=1).astype(np.float64)
    ell = bounds["ellipsoid"]
    d = lab - np.asarray(ell["mean"])
    dist = np.sqrt(np.einsum("ni,ij,nj->n", d, np.asarray(ell["inv_cov"]), d))
    box = np.zeros(len(lab), dtype=bool)
    for j, c in enumerate(COLOUR_CHANNELS):
        lo, hi = bounds["box"][c]
        box |= (lab[:, j] < lo) | (lab[:, j] > hi)
    return {"ellipsoid": dist > ell["radius"], "box": box}


def relative_change(
    orig: dict[str, np.ndarray], aug: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    return {
        k: np.abs(aug[k] - orig[k]) / np.maximum(np.abs(orig[k]), floor)
        for k, floor in REL_FLOOR.items()
    }


def summarise(
    rel: dict[str, np.ndarray],
    outside: dict[str, np.ndarray],
    colour_shift: np.ndarray,
    inside: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Median and p95 per feature, on all lesions and on those that do not touch the frame."""
    result: dict[str, dict[str, float]] = {}
    for name, sel in (("all", np.ones_like(inside)), ("inside_frame", inside)):
        row: dict[str, float] = {"n": int(sel.sum())}
        for k, v in {**rel, "colour_shift_dE": colour_shift}.items():
            row[f"{k}_median"] = float(np.median(v[sel]))
            row[f"{k}_p95"] = float(np.percentile(v[sel], 95))
        for k, v in outside.items():
            row[f"outside_{k}"] = float(v[sel].mean())
        result[name] = row
    return result


#: The issue's targets for the faithful preset: (feature, statistic) -> upper bound.
TARGETS: dict[tuple[str, str], float] = {
    ("asymmetry", "median"): 0.05,
    ("asymmetry", "p95"): 0.15,
    ("compactness", "median"): 0.05,
    ("compactness", "p95"): 0.15,
    ("outside", "ellipsoid"): 0.02,
}


def check_targets(row: dict[str, float]) -> dict[str, bool]:
    return {f"{f}_{s}": row[f"{f}_{s}"] < bound for (f, s), bound in TARGETS.items()}


def _markdown(report: dict) -> str:
    feats = ["asymmetry", "compactness", "area", "colour_spread", "n_colours"]
    cols = [*feats, "colour shift dE", "outside ellipsoid", "outside box"]
    lines = [
        f"# Augmentation audit: {report['n_images']} HAM10000 images at {report['size']} px\n\n",
        f"Produced by `{report['command']}`.\n\n",
        "Cells are median / p95 over lesions of the relative change "
        "|f_aug - f_orig| / max(|f_orig|, floor) (floors: "
        + ", ".join(f"{k} {v}" for k, v in REL_FLOOR.items())
        + "). `colour shift dE` is the CIE76 distance between the mean lesion colours before and "
        "after. `outside ellipsoid`: share of lesions whose mean L\\*a\\*b\\* colour lies outside "
        f"the Mahalanobis ellipsoid holding {RANGE_PERCENTILES[1]}% of {report['reference_n']} "
        "real HAM10000 lesions; `outside box`: outside the per-channel "
        f"{RANGE_PERCENTILES[0]}-{RANGE_PERCENTILES[1]} percentile range. `inside_frame`: lesions "
        "whose mask does not touch the image border (a lesion cut by the frame has no defined "
        "asymmetry: rotation shows a different part of it).\n\n",
        "| preset | lesions | " + " | ".join(cols) + " |\n",
        "|" + " --- |" * (len(cols) + 2) + "\n",
    ]
    for sub, row in report["original"].items():
        lines.append(
            f"| original | {sub} (n={row['n']}) | "
            + " | ".join("-" for _ in feats)
            + f" | - | {row['outside_ellipsoid']:.1%} | {row['outside_box']:.1%} |\n"
        )
    for preset, res in report["presets"].items():
        for sub, row in res.items():
            cells = [f"{row[f + '_median']:.1%} / {row[f + '_p95']:.1%}" for f in feats]
            cells.append(f"{row['colour_shift_dE_median']:.1f} / {row['colour_shift_dE_p95']:.1f}")
            cells += [f"{row['outside_ellipsoid']:.1%}", f"{row['outside_box']:.1%}"]
            lines.append(f"| {preset} | {sub} (n={row['n']}) | " + " | ".join(cells) + " |\n")
    lines.append(
        "\nTargets for a faithful preset (asymmetry and compactness median < 5%, p95 < 15%; "
    )
    lines.append("outside ellipsoid < 2%):\n\n")
    for preset, res in report["presets"].items():
        for sub, row in res.items():
            met = check_targets(row)
            missed = [k for k, ok in met.items() if not ok]
            verdict = "all met" if not missed else "missed: " + ", ".join(missed)
            lines.append(f"- {preset}, {sub}: {verdict}\n")
    return "".join(lines)


def _touches_frame(masks: torch.Tensor) -> np.ndarray:
    edge = torch.cat(
        [masks[..., 0, :], masks[..., -1, :], masks[..., :, 0], masks[..., :, -1]], dim=-1
    )
    return (edge.amax(dim=(1, 2)) >= 0.5).numpy()


def run(args: argparse.Namespace) -> int:
    """Run the audit; returns the process exit code."""
    data: Path = args.data
    meta_path = data / "HAM10000_metadata.csv"
    try:  # every argument is checked before an image is read: one line, exit status 2
        if not meta_path.is_file():
            raise InputError(f"no HAM10000_metadata.csv in {data} (pass --data)")
        if args.n < 2:
            raise InputError(f"--n must be at least 2, got {args.n}")
        presets = {name: load_preset(name, args.conf_dir) for name in args.presets}
    except InputError as err:
        exit_with("dermlit augment-audit", str(err))
    meta = pd.read_csv(meta_path)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(meta))
    ids = meta["image_id"].to_numpy()[order][: args.n].tolist()
    images, masks = load_batch(data, ids, args.size)
    keep = (masks.sum(dim=(1, 2, 3)) >= 0.01 * args.size**2).numpy()  # drop empty masks
    images, masks = images[keep], masks[keep]
    ids = [i for i, k in zip(ids, keep, strict=True) if k]
    ref_ids = meta["image_id"].tolist()
    if args.reference_n:
        ref_ids = meta["image_id"].to_numpy()[order][: args.reference_n].tolist()
    bounds = reference_range(data, ref_ids, args.size, args.batch_size)
    orig = _features(images, masks, args.batch_size)
    inside = ~_touches_frame(masks)
    orig_out = outside_range(orig, bounds)
    report: dict = {
        "command": "dermlit augment-audit "
        + f"--n {args.n} --size {args.size} --seed {args.seed} --presets {' '.join(args.presets)}"
        + (f" --reference-n {args.reference_n}" if args.reference_n else "")
        + f" --gallery-per-class {args.gallery_per_class} --out {args.out}",
        "n_images": len(ids),
        "size": args.size,
        "seed": args.seed,
        "reference_n": len(ref_ids),
        "rel_floor": REL_FLOOR,
        "colour_range": bounds,
        "original": {
            sub: {
                "n": int(sel.sum()),
                **{f"outside_{k}": float(v[sel].mean()) for k, v in orig_out.items()},
            }
            for sub, sel in (("all", np.ones_like(inside)), ("inside_frame", inside))
        },
        "presets": {},
    }
    augmented: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, preset in presets.items():
        torch.manual_seed(args.seed)
        outs = [
            preset(images[i : i + args.batch_size], masks[i : i + args.batch_size])
            for i in range(0, len(images), args.batch_size)
        ]
        aug_img = torch.cat([o[0] for o in outs])
        aug_msk = torch.cat([o[1] for o in outs])
        aug = _features(aug_img, aug_msk, args.batch_size)
        shift = np.sqrt(sum((aug[c] - orig[c]) ** 2 for c in COLOUR_CHANNELS))
        res = summarise(relative_change(orig, aug), outside_range(aug, bounds), shift, inside)
        for row in res.values():
            row["targets_met"] = check_targets(row)
        report["presets"][name] = res
        augmented[name] = (aug_img, aug_msk)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "audit.md").write_text(_markdown(report))
    labels = meta.set_index("image_id").loc[ids, "dx"].tolist()
    write_gallery(
        args.out / "gallery.png", images, masks, augmented, labels, args.gallery_per_class
    )
    print(_markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dermlit augment-audit", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
