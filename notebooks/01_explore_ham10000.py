# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 - Exploring HAM10000
#
# What a model trained on HAM10000 is up against: how imbalanced the seven classes are, how
# many images each lesion contributes (why splits are grouped by lesion), how age, sex and body
# site differ by class, and what the augmentation presets (`conf/augment/`) do to real images.
#
# **Inputs** (environment variables):
# - `DERMLIT_HAM10000`: the dataset root (`HAM10000_metadata.csv` + images); default
#   `../shared/data/ham10000-200x150` relative to the repository root.
# - `DERMLIT_NOTEBOOK_SMOKE=1`: use a tiny generated synthetic set instead (also the fallback
#   when the dataset root does not exist), so the notebook runs anywhere. It is generated once
#   into `$DERMLIT_CACHE/notebook-synthetic` (default `.cache/dermlit/`, git-ignored).
# - `DERMLIT_NOTEBOOK_OUT`: where the figures and tables go; default
#   `outputs/notebooks/01_explore_ham10000/` (git-ignored).

# %%
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

import dermlit
from dermlit.config import compose_config
from dermlit.constants import CLASSES, HAM10000_CLASS_COUNTS
from dermlit.data.cache import load_square
from dermlit.data.sources.ham10000 import HAM10000Source
from dermlit.data.synthetic import generate_synthetic_dataset
from dermlit.figures import FigureSaver

REPO = Path(dermlit.__file__).resolve().parents[1]
SMOKE = os.environ.get("DERMLIT_NOTEBOOK_SMOKE", "") not in ("", "0")
DATA_ROOT = Path(
    os.environ.get("DERMLIT_HAM10000", REPO.parent / "shared/data/ham10000-200x150")
).expanduser()
OUT = Path(os.environ.get("DERMLIT_NOTEBOOK_OUT", REPO / "outputs/notebooks/01_explore_ham10000"))
OUT.mkdir(parents=True, exist_ok=True)
IMAGE_SIZE = 96 if SMOKE else 128  # gallery tile size (px)
PER_CLASS = 2  # gallery images per class
DRAWS = 2  # random draws per augmenting preset
SEED = 0

if SMOKE or not (DATA_ROOT / "HAM10000_metadata.csv").is_file():
    reason = "DERMLIT_NOTEBOOK_SMOKE=1" if SMOKE else f"no HAM10000 at {DATA_ROOT}"
    cache = Path(os.environ.get("DERMLIT_CACHE", REPO / ".cache/dermlit"))
    DATA_ROOT = generate_synthetic_dataset(cache / "notebook-synthetic", n_images=200, seed=SEED)
    SYNTHETIC = True
    print(
        f"Using a tiny SYNTHETIC set at {DATA_ROOT} ({reason}): the numbers below are not HAM10000's."
    )
else:
    SYNTHETIC = False
    print(f"Using {DATA_ROOT}")
print(f"Figures and tables go to {OUT}")

save = FigureSaver(OUT)
FIGURES = save.figures


# %% [markdown]
# ## The index
# `HAM10000Source.load()` gives the index every dermlit source produces (`image_id, path,
# label, lesion_id` and the metadata columns) plus its validation report.

# %%
index, report = HAM10000Source(DATA_ROOT).load()
print(report.message() if not report.ok else f"{report.dataset}: metadata validation passed")
print(f"{len(index)} images, {index['lesion_id'].nunique()} lesions")
index.head()

# %% [markdown]
# ## Class imbalance
# `nv` dominates; `df` and `vasc` have about 1-2% of the images each. The ratio to the largest
# class is what a class-balanced sampler or loss has to make up for.

# %%
counts = index["label"].value_counts().reindex(CLASSES, fill_value=0)
class_counts = pd.DataFrame(
    {
        "images": counts,
        "share": counts / counts.sum(),
        "largest / this": counts.max() / counts.replace(0, np.nan),
        "official HAM10000": pd.Series(HAM10000_CLASS_COUNTS).reindex(CLASSES),
    }
).rename_axis("class")
class_counts.to_csv(OUT / "class_counts.csv")
class_counts.style.format({"share": "{:.1%}", "largest / this": "{:.1f}"})

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
for ax, log in zip(axes, (False, True), strict=True):
    bars = ax.bar(CLASSES, counts.to_numpy(), color="tab:blue")
    ax.bar_label(bars, fontsize=8)
    ax.set(ylabel="images", title="images per class" + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
save(fig, "class_counts")

# %% [markdown]
# ## Images per lesion
# Many lesions were photographed several times. Images of one lesion must stay in one split,
# or the test set holds near-copies of training images (dermlit's splits group by `lesion_id`).

# %%
per_lesion = index.groupby("lesion_id").size()
labels_per_lesion = index.groupby("lesion_id")["label"].nunique()
lesion_label = index.groupby("lesion_id")["label"].first()
lesions_by_class = pd.DataFrame(
    {
        "lesions": lesion_label.value_counts().reindex(CLASSES, fill_value=0),
        "images": counts,
    }
).rename_axis("class")
lesions_by_class["images per lesion"] = lesions_by_class["images"] / lesions_by_class["lesions"]
print(f"lesions with more than one label: {int((labels_per_lesion > 1).sum())}")
print("lesions by number of images:", per_lesion.value_counts().sort_index().to_dict())
lesions_by_class.to_csv(OUT / "lesions_by_class.csv")
lesions_by_class.round(2)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), constrained_layout=True)
dist = per_lesion.value_counts().sort_index()
axes[0].bar(dist.index.astype(str), dist.to_numpy(), color="tab:green")
axes[0].set(xlabel="images of the lesion", ylabel="lesions", title="images per lesion")
axes[1].bar(CLASSES, lesions_by_class["images per lesion"], color="tab:green")
axes[1].set(ylabel="mean images per lesion", title="by class")
save(fig, "images_per_lesion")

# %% [markdown]
# ## Age, sex and body site by class
# Differences here are shortcuts a model can learn (e.g. `nv` patients are younger); missing
# values are shown as `unknown`.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
ages = pd.to_numeric(index.get("age", pd.Series(np.nan, index=index.index)), errors="coerce")
axes[0].boxplot([ages[index["label"] == c].dropna().to_numpy() for c in CLASSES])
axes[0].set_xticks(range(1, len(CLASSES) + 1), CLASSES)
axes[0].set(ylabel="age (years)", title=f"age by class ({int(ages.isna().sum())} unknown)")
sex = index.get("sex", pd.Series("unknown", index=index.index)).fillna("unknown")
sex_share = pd.crosstab(index["label"], sex, normalize="index").reindex(CLASSES).fillna(0)
sex_share.plot.bar(stacked=True, ax=axes[1], rot=0, colormap="Set2")
axes[1].set(ylabel="share of images", xlabel="", title="sex by class")
axes[1].legend(fontsize=8, loc="lower right")
save(fig, "age_sex_by_class")

# %%
site = index.get("localization", pd.Series("unknown", index=index.index)).fillna("unknown")
site_share = pd.crosstab(site, index["label"], normalize="columns").reindex(columns=CLASSES)
site_share = site_share.fillna(0).loc[site.value_counts().index]  # most common site first
fig, ax = plt.subplots(figsize=(7, 0.32 * len(site_share) + 1.5), constrained_layout=True)
im = ax.imshow(site_share.to_numpy(), cmap="viridis", aspect="auto", vmin=0)
ax.set_xticks(range(len(CLASSES)), CLASSES)
ax.set_yticks(range(len(site_share)), site_share.index, fontsize=8)
for (r, c), v in np.ndenumerate(site_share.to_numpy()):
    ax.text(c, r, f"{v:.0%}", ha="center", va="center", fontsize=6, color="w" if v < 0.3 else "k")
fig.colorbar(im, ax=ax, label="share of the class's images")
ax.set_title("body site by class")
save(fig, "localization_by_class")

# %% [markdown]
# ## Augmentation gallery
# The presets of `conf/augment/` built as training builds them (`hydra.utils.instantiate`), run
# on a float batch in [0, 1] (B, 3, H, W). `none` must return the image unchanged;
# `dermoscopy` keeps lesion shape and colour within a dermatoscope's range; `standard` (the
# ImageNet recipe) crops, recolours and warps far more.

# %%
preset_files = sorted((REPO / "conf/augment").glob("*.yaml"))
first = ["none", "dermoscopy", "standard"]
preset_files.sort(key=lambda p: (first.index(p.stem) if p.stem in first else len(first), p.stem))
# composed as training composes them: an option may extend another (defaults list)
presets = {
    p.stem: instantiate(compose_config(None, [f"+augment={p.stem}"]).augment) for p in preset_files
}
shown = index.sample(frac=1.0, random_state=SEED).groupby("label").head(PER_CLASS)
shown = shown.sort_values("label", key=lambda s: s.map(CLASSES.index))
batch = torch.from_numpy(np.stack([load_square(p, IMAGE_SIZE) for p in shown["path"]]))
batch = batch.permute(0, 3, 1, 2).float() / 255.0
torch.manual_seed(SEED)
columns = {"original": batch}
for name, preset in presets.items():
    for draw in range(1 if name == "none" else DRAWS):
        with torch.no_grad():
            columns[name if name == "none" else f"{name} #{draw + 1}"] = preset(batch.clone())
print("none preset returns the input unchanged:", torch.equal(columns.get("none", batch), batch))

# %%
rows, cols = len(shown), len(columns)
fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), squeeze=False)
for c, (name, images) in enumerate(columns.items()):
    axes[0, c].set_title(name, fontsize=8)
    for r in range(rows):
        axes[r, c].imshow(images[r].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, c].set_xticks([])
        axes[r, c].set_yticks([])
for r, label in enumerate(shown["label"]):
    axes[r, 0].set_ylabel(label, fontsize=8)
fig.subplots_adjust(wspace=0.03, hspace=0.03)
save(fig, "augmentation_gallery")

# %%
print("Figures:", ", ".join(str(p) for p in FIGURES.values()))
