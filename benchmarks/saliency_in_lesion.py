"""Does a run's Grad-CAM point at the lesion? Its mass inside the HAM10000 lesion masks on the
run's TEST images, against a centred Gaussian blob of the same spread (explain/lesion_overlap.py).

    python benchmarks/saliency_in_lesion.py RUN_DIR --masks ../shared/data/ham10000-200x150/masks
        [--images DIR] [--layer layer3] [--n 500] [--out docs/saliency_in_lesion.png]

The explained class is the run's decision (argmax after post-hoc bias and temperature); the
map is taken on the un-augmented image. ``--layer``: the backbone's submodule whose activations
Grad-CAM uses (default: as the report's gallery, the last timm feature stage at least 4 cells
wide at the run's input size, explain/review.py ``cam_layer``: ResNet ``layer4`` is 1x1 at
32 px, its map uniform, min-max scaled to zero). Prints the means, the paired lift (saliency - blob) with a bootstrap CI, and per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dermlit.constants import CLASSES  # noqa: E402
from dermlit.explain.lesion_overlap import lesion_overlap, load_lesion_mask, mask_path  # noqa: E402
from dermlit.explain.review import cam_layer  # noqa: E402
from dermlit.explain.saliency import grad_cam, overlay  # noqa: E402
from dermlit.inference.inputs import decode  # noqa: E402
from dermlit.inference.run import load_decisions  # noqa: E402
from dermlit.inference.weights import deployable_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HAM = REPO.parent / "shared/data/ham10000-200x150"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--masks", type=Path, default=HAM / "masks")
    parser.add_argument("--images", type=Path, default=HAM / "images")
    parser.add_argument("--layer", help="backbone submodule for Grad-CAM (default: last stage)")
    parser.add_argument("--n", type=int, default=0, help="N random test images (0: all)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "saliency_in_lesion.png")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    decisions = load_decisions(args.run_dir)
    model = deployable_model(decisions)
    splits = pd.read_csv(args.run_dir / "splits.csv")
    test = splits[splits["split"] == "test"].reset_index(drop=True)
    test = test[[mask_path(args.masks, i).is_file() for i in test["image_id"]]]
    if args.n:
        test = test.sample(args.n, random_state=0).sort_index()
    if test.empty:
        raise SystemExit(f"no test image of {args.run_dir} has a mask in {args.masks}")
    size = decisions.image_size
    pixels = np.stack([decode(args.images / f"{i}.jpg", size)[0] for i in test["image_id"]])
    masks = np.stack(
        [
            load_lesion_mask(mask_path(args.masks, i), size, args.images / f"{i}.jpg")
            for i in test["image_id"]
        ]
    )
    with torch.inference_mode():
        probs = torch.cat([model(torch.from_numpy(c))[0] for c in np.array_split(pixels, 16)])
    decided = probs.argmax(1).numpy()
    name = args.layer or cam_layer(model.backbone, size)  # as the report's gallery
    layer = None if name is None else model.backbone.get_submodule(name)
    # the backbone's input as the deployable model makes it: colour-corrected like its probs
    with torch.inference_mode():
        seen = model.colour_constancy(torch.from_numpy(pixels)).numpy()
    maps = grad_cam(model.backbone, seen, decisions.mean, decisions.std, decided, layer)
    overlap = lesion_overlap(maps, masks)
    summary = overlap.summary()
    uniform = bool(np.allclose(maps.std((1, 2)), 0))
    name = name or "the last Conv2d"
    print(f"{args.run_dir}: {len(test)} test images with masks, {size} px, Grad-CAM at {name}")
    if uniform or summary["n_images"] == 0:
        raise SystemExit(
            f"  every map is uniform or zero ({name} is 1x1 at {size} px input): nothing to "
            "measure; choose an earlier stage, e.g. --layer layer2 (ResNet)"
        )
    print(
        f"  saliency mass inside the lesion {summary['saliency']:.3f}, centred blob "
        f"{summary['blob']:.3f}, lesion area {summary['area']:.3f}; lift {summary['lift']:+.3f} "
        f"[{summary['lift_ci_low']:+.3f}, {summary['lift_ci_high']:+.3f}]; saliency beats the "
        f"blob on {summary['share_saliency_beats_blob']:.0%} of images; "
        f"{summary['n_zero_maps']} all-zero maps left out"
    )
    truth = test["label"].to_numpy()
    for c in CLASSES:
        m = (truth == c) & ~np.isnan(overlap.saliency)
        if m.any():
            print(
                f"  {c:6s} n={int(m.sum()):4d}  saliency {np.nanmean(overlap.saliency[m]):.3f}  "
                f"blob {np.nanmean(overlap.blob[m]):.3f}  area {overlap.area[m].mean():.3f}"
            )
    figure(args.out, overlap, pixels, maps, masks, test, decided, summary, name)
    print(f"  figure: {args.out}")


def figure(out, overlap, pixels, maps, masks, test, decided, summary, layer_name) -> None:
    fig = plt.figure(figsize=(11, 4.6))
    ax = fig.add_axes([0.06, 0.14, 0.34, 0.74])
    ok = ~np.isnan(overlap.saliency)
    bins = np.linspace(0, 1, 21)
    ax.hist(overlap.saliency[ok], bins, alpha=0.6, label=f"Grad-CAM ({summary['saliency']:.2f})")
    ax.hist(overlap.blob[ok], bins, alpha=0.6, label=f"centred blob ({summary['blob']:.2f})")
    ax.axvline(
        summary["area"], color="k", ls="--", lw=1, label=f"mean area ({summary['area']:.2f})"
    )
    ax.set_xlabel("share of the map's mass inside the lesion mask")
    ax.set_ylabel("test images")
    ax.set_title(f"Grad-CAM at {layer_name}, {int(ok.sum())} images", fontsize=9)
    ax.legend(fontsize=8)
    lift = overlap.saliency - overlap.blob
    order = np.flatnonzero(ok)[np.argsort(-lift[ok])]  # all-zero maps (NaN) are not shown
    picks = [*order[:3], *order[::-1][:3]] if len(order) >= 6 else list(order)
    for k, i in enumerate(picks):
        sub = fig.add_axes([0.45 + (k % 3) * 0.18, 0.5 - (k // 3) * 0.46, 0.16, 0.34])
        sub.imshow(overlay(pixels[i], maps[i]))
        sub.contour(masks[i], levels=[0.5], colors="w", linewidths=0.8)
        sub.set_title(
            f"{test['image_id'].iloc[i]} {test['label'].iloc[i]}->{CLASSES[decided[i]]}\n"
            f"in lesion {overlap.saliency[i]:.2f} vs blob {overlap.blob[i]:.2f}",
            fontsize=7,
        )
        sub.axis("off")
    fig.text(0.45, 0.96, "largest (top) and smallest (bottom) lift; white: lesion mask", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
