"""The colour spread between HAM10000's four sources, from which ``augment=dermoscopy_wide`` takes
its colour-jitter ranges (conf/augment/dermoscopy_wide.yaml).

    python benchmarks/source_colour_spread.py [--data ../shared/data/ham10000-200x150] \\
        [--region image|skin] [--out docs/results/source_shift/colour_spread_image.json]

Per image (by default the whole 200x150 frame, which is what the jitter acts on; ``--region
skin``: outside the public lesion mask and inside the dermatoscope's field of view, which shows
the acquisition alone (light, camera, white balance) while the lesion's colour is also case
mix): brightness (mean Rec.601 luma, what Kornia's
brightness factor multiplies), contrast (std of the luma, what its contrast factor scales),
saturation (mean HSV saturation, scaled by its saturation factor), hue (saturation-weighted
circular mean hue, in turns, shifted by its hue jitter), mean RGB and the Shades-of-Gray (p = 6)
illuminant chromaticity. Per source: the median and quartiles of each. The jitter a source
needs is how far its median sits from the pooled median: ``|median_s / median_all - 1|`` for
the multiplicative factors, the circular hue difference for hue; the widened symmetric range
is the largest over sources, the measured SPAN the (low, high) of the source medians relative
to the pooled one, both joined with the dermoscopy preset's range (never narrower).
``augment=dermoscopy_wide`` takes the spans, except saturation upwards, which the morphology
audit caps (its yaml says why).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
STATS = ("brightness", "contrast", "saturation", "hue", "r", "g", "b", "sog_r", "sog_g", "sog_b")
#: the dermoscopy preset's ranges (conf/augment/dermoscopy.yaml): the floor of the wide one
PRESET = {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.02}


def image_stats(path: Path, mask_path: Path | None = None) -> list[float]:
    """The statistics over the whole frame, or (``mask_path``) over the skin outside the lesion
    mask and inside the dermatoscope's field of view (luma > 0.05)."""
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
        hsv = np.asarray(img.convert("HSV"), dtype=np.float64) / 255.0
    luma = rgb @ np.asarray([0.299, 0.587, 0.114])
    keep = np.ones(luma.shape, dtype=bool)
    if mask_path is not None:
        with Image.open(mask_path) as m:
            keep = (np.asarray(m.convert("L")) < 128) & (luma > 0.05)
        if keep.sum() < 100:  # a lesion filling the frame: fall back to the whole frame
            keep = np.ones(luma.shape, dtype=bool)
    rgb, luma, hsv = rgb[keep], luma[keep], hsv[keep]
    sat, angle = hsv[:, 1], hsv[:, 0] * 2 * np.pi
    weight = sat.sum() or 1.0
    hue = np.arctan2((sat * np.sin(angle)).sum() / weight, (sat * np.cos(angle)).sum() / weight)
    sog = ((rgb**6).mean(axis=0)) ** (1 / 6)
    sog = sog / np.linalg.norm(sog)
    return [luma.mean(), luma.std(), sat.mean(), (hue / (2 * np.pi)) % 1.0, *rgb.mean(0), *sog]


def circular_median(turns: pd.Series) -> float:
    """The median of hue angles around their circular mean (no wrap-around at 0/1)."""
    angle = turns.to_numpy() * 2 * np.pi
    centre = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi)
    offset = (turns.to_numpy() - centre + 0.5) % 1.0 - 0.5
    return float((centre + np.median(offset)) % 1.0)


def hue_distance(a: float, b: float) -> float:
    return abs((a - b + 0.5) % 1.0 - 0.5)


def measure(data: Path, region: str = "skin", workers: int = 2) -> pd.DataFrame:
    meta = pd.read_csv(data / "HAM10000_metadata.csv")
    paths = [data / "images" / f"{i}.jpg" for i in meta["image_id"]]
    masks = [
        data / "masks" / f"{i}_segmentation.png" if region == "skin" else None
        for i in meta["image_id"]
    ]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(image_stats, paths, masks))
    stats = pd.DataFrame(rows, columns=list(STATS))
    stats.insert(0, "dataset", meta["dataset"].to_numpy())
    return stats


def summarise(stats: pd.DataFrame) -> dict:
    groups = {"all": stats, **dict(tuple(stats.groupby("dataset")))}
    table = {}
    for name, frame in groups.items():
        row = {"n_images": len(frame)}
        for col in STATS:
            values = frame[col]
            row[col] = circular_median(values) if col == "hue" else float(values.median())
            if col != "hue":
                row[f"{col}_q25"], row[f"{col}_q75"] = (
                    float(values.quantile(0.25)),
                    float(values.quantile(0.75)),
                )
        table[name] = row
    pooled = table["all"]
    needed = {}
    for name, row in table.items():
        if name == "all":
            continue
        needed[name] = {
            **{k: abs(row[k] / pooled[k] - 1) for k in ("brightness", "contrast", "saturation")},
            "hue": hue_distance(row["hue"], pooled["hue"]),
        }
    ranges = {k: max(PRESET[k], max(source[k] for source in needed.values())) for k in PRESET}
    # the one-sided spans: source medians relative to the pooled one (hue: the signed shift),
    # joined with the preset's symmetric range
    others = [row for name, row in table.items() if name != "all"]
    spans = {}
    for k in ("brightness", "contrast", "saturation"):
        ratios = [row[k] / pooled[k] for row in others]
        spans[k] = [min(1 - PRESET[k], min(ratios)), max(1 + PRESET[k], max(ratios))]
    shifts = [(row["hue"] - pooled["hue"] + 0.5) % 1.0 - 0.5 for row in others]
    spans["hue"] = [min(-PRESET["hue"], min(shifts)), max(PRESET["hue"], max(shifts))]
    return {
        "per_source": table,
        "jitter_needed": needed,
        "wide_ranges": ranges,
        "wide_spans": spans,
    }


def markdown(summary: dict) -> str:
    cols = ["brightness", "contrast", "saturation", "hue", "r", "g", "b", "sog_r", "sog_g", "sog_b"]
    lines = [
        "| source | images | " + " | ".join(cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for name, row in summary["per_source"].items():
        cells = [f"{row[c]:.3f}" for c in cols]
        lines.append(f"| {name} | {row['n_images']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| source | brightness | contrast | saturation | hue (turns) |",
        "| --- " * 5 + "|",
    ]
    for name, row in summary["jitter_needed"].items():
        cells = [f"{row[k]:.3f}" for k in ("brightness", "contrast", "saturation", "hue")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    wide = summary["wide_ranges"]
    lines.append("| **widened range** | " + " | ".join(f"**{wide[k]:.3f}**" for k in PRESET) + " |")
    spans = summary["wide_spans"]
    cells = " | ".join(f"[{spans[k][0]:.3f}, {spans[k][1]:.3f}]" for k in PRESET)
    lines.append(f"| **measured span** (factor; hue: shift) | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/ham10000-200x150")
    parser.add_argument("--out", type=Path, default=None, help="write the summary as JSON")
    parser.add_argument(
        "--region",
        choices=("skin", "image"),
        default="image",
        help="image: the whole frame (what the colour jitter acts on: the ranges come from it); "
        "skin: outside the lesion mask (the acquisition alone: light, camera, white balance; "
        "the lesion's colour is also case mix)",
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    summary = summarise(measure(args.data, args.region, args.workers))
    summary["region"] = args.region
    summary["command"] = f"python benchmarks/source_colour_spread.py --region {args.region}" + (
        f" --out {args.out}" if args.out else ""
    )
    print("Medians per source (quartiles in the JSON):\n")
    print(markdown(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
