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
# # 02 - Analysing a sweep
#
# Which loss x sampler serves the rare classes best, how sure we are, and what it costs in
# calibration. Reads a Hydra multirun directory (e.g. from
# `dermlit-train -m experiment=imbalance_sweep`): every job directory's
# `.hydra/overrides.yaml`, `metrics.json` and `predictions.csv` (docs/design.md, "Contract": the run directory).
#
# **Inputs** (environment variables):
# - `DERMLIT_SWEEP_DIR`: the multirun directory; default: the newest folder in
#   `outputs/multiruns/` (`$DERMLIT_OUTPUT/multiruns/` when that is set).
# - `DERMLIT_NOTEBOOK_OUT`: where the figures and tables go; default
#   `outputs/notebooks/02_sweep_analysis/` (git-ignored).
#
# **Intervals.** Over seeds: the mean and 95% t-interval of `dermlit sweep-summary` (training
# randomness). A configuration with a single seed has no such interval; there the run's own
# bootstrap CI from `metrics.json` (test-set sampling) is shown instead, and the tables say so.
#
# **Best and baseline.** Best: the configuration with the highest mean test macro-F1.
# Baseline: `loss=ce sampler=shuffle` (plain cross-entropy, no resampling) when the sweep has it,
# else the configuration with the lowest mean macro-F1.

# %%
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

import dermlit
from dermlit.constants import CLASSES
from dermlit.evaluation.calibration import reliability_curve
from dermlit.evaluation.metrics import point_metrics
from dermlit.evaluation.predictions import read_predictions
from dermlit.figures import FigureSaver
from dermlit.sweep_summary import (
    configuration_labels,
    override_key,
    plot,
    read_jobs,
    summarise,
    t_interval,
    to_markdown,
)

REPO = Path(dermlit.__file__).resolve().parents[1]
OUT = Path(os.environ.get("DERMLIT_NOTEBOOK_OUT", REPO / "outputs/notebooks/02_sweep_analysis"))
OUT.mkdir(parents=True, exist_ok=True)
MULTIRUNS = Path(os.environ.get("DERMLIT_OUTPUT", REPO / "outputs")) / "multiruns"
BASELINE_CHOICES = {"loss": "ce", "sampler": "shuffle"}


def newest_sweep(root: Path) -> Path | None:
    dirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    return max(dirs, key=lambda d: d.stat().st_mtime, default=None)


SWEEP_DIR = os.environ.get("DERMLIT_SWEEP_DIR") or newest_sweep(MULTIRUNS)
if SWEEP_DIR is None:
    raise FileNotFoundError(
        f"No multirun directory to analyse: {MULTIRUNS} holds none. Run a sweep first "
        "(`dermlit-train -m experiment=imbalance_sweep`) or set DERMLIT_SWEEP_DIR=DIR."
    )
SWEEP_DIR = Path(SWEEP_DIR)
print(f"Sweep: {SWEEP_DIR}\nFigures and tables go to {OUT}")

save = FigureSaver(OUT)
FIGURES = save.figures


# %% [markdown]
# ## The summary table
# The same table as `dermlit sweep-summary`: one row per configuration (the overrides that
# differ between jobs, seed excluded), sorted by mean test macro-F1.

# %%
jobs = read_jobs(SWEEP_DIR)
table = summarise(jobs)
print(to_markdown(table, jobs, SWEEP_DIR))
table.to_csv(OUT / "summary.csv", index=False)
plot(table, jobs, OUT / "summary.png")  # sweep_summary's own figure (not pyplot)
FIGURES["summary"] = OUT / "summary.png"
if "IPython" in sys.modules:  # in Jupyter: show the saved PNG
    from IPython import get_ipython
    from IPython.display import Image, display

    if get_ipython() is not None:
        display(Image(filename=str(OUT / "summary.png")))
table.round(3)

# %% [markdown]
# ## One row per finished job
# All of `metrics.json` (the `test/` keys, prefix dropped), with the `loss` and `sampler` each
# job used: from its overrides, else from Hydra's recorded choices (`.hydra/hydra.yaml`).


# %%
def group_choice(job, group: str) -> str:
    for o in job.overrides:
        if override_key(o) == group and "=" in o:
            return o.split("=", 1)[1]
    hydra_yaml = job.path / ".hydra" / "hydra.yaml"
    if hydra_yaml.is_file():
        choices = (yaml.safe_load(hydra_yaml.read_text()) or {}).get("hydra", {})
        choices = choices.get("runtime", {}).get("choices", {})
        if group in choices:
            return str(choices[group])
    return "default"


labels, _ = configuration_labels(jobs)
rows = []
for job, label in zip(jobs, labels, strict=True):
    if job.failed:
        continue
    metrics = json.loads((job.path / "metrics.json").read_text())
    test = {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")}
    choice = {g: group_choice(job, g) for g in ("loss", "sampler")}
    rows.append({"configuration": label, **choice, "seed": job.seed, "job": job.path} | test)
if not rows:
    raise RuntimeError(f"no job in {SWEEP_DIR} finished (no metrics.json): nothing to analyse")
runs = pd.DataFrame(rows)
# anything else that varies (e.g. optim) stays apart: it is added to the sampler's label
other = [
    ",".join(p for p in c.split(",") if override_key(p) not in ("loss", "sampler"))
    for c in runs["configuration"]
]
runs["variant"] = [
    s if not o else f"{s} | {o}" for s, o in zip(runs["sampler"], other, strict=True)
]
print(f"{len(runs)} finished job(s), {sum(j.failed for j in jobs)} failed")
runs.drop(columns="job").head()

# %% [markdown]
# ## Macro-F1 per loss x sampler, with 95% intervals


# %%
def cell_interval(group: pd.DataFrame, metric: str) -> dict:
    mean, low, high = t_interval(group[metric].astype(float).tolist())
    n = int(group[metric].notna().sum())
    kind = "seeds (t)"
    if n == 1 and f"{metric}_ci_low" in group:  # one seed: the run's own bootstrap CI
        low, high = (float(group[f"{metric}_{b}"].dropna().iloc[0]) for b in ("ci_low", "ci_high"))
        kind = "bootstrap (1 seed)"
    return {"n_seeds": n, "mean": mean, "ci_low": low, "ci_high": high, "interval": kind}


grid = pd.DataFrame(
    [
        {"loss": loss, "variant": variant} | cell_interval(group, "macro_f1")
        for (loss, variant), group in runs.groupby(["loss", "variant"], sort=False)
    ]
)
grid.to_csv(OUT / "macro_f1_loss_sampler.csv", index=False)
grid.round(3)

# %%
losses = grid.groupby("loss")["mean"].max().sort_values(ascending=False).index.tolist()
variants = list(dict.fromkeys(grid["variant"]))
fig, axes = plt.subplots(
    1, 2, figsize=(13, 0.4 * len(losses) + 3.5), constrained_layout=True,
    gridspec_kw={"width_ratios": [1.6, 1]},
)  # fmt: skip
width = 0.8 / len(variants)
for i, variant in enumerate(variants):
    cells = grid[grid["variant"] == variant].set_index("loss").reindex(losses)
    x = np.arange(len(losses)) + (i - (len(variants) - 1) / 2) * width
    err = np.stack([cells["mean"] - cells["ci_low"], cells["ci_high"] - cells["mean"]])
    axes[0].bar(x, cells["mean"], width, label=variant, color=f"C{i}")
    axes[0].errorbar(x, cells["mean"], yerr=np.nan_to_num(err), fmt="none", ecolor="k", capsize=3)
axes[0].set_xticks(range(len(losses)), losses)
axes[0].set(ylabel="test macro-F1", ylim=(0, 1), title="macro-F1 (bars: 95% interval)")
axes[0].legend(title="sampler", fontsize=8)
heat = grid.pivot(index="loss", columns="variant", values="mean").reindex(losses)[variants]
im = axes[1].imshow(heat.to_numpy(dtype=float), cmap="viridis", aspect="auto")
axes[1].set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
axes[1].set_yticks(range(len(losses)), losses)
for _, c in grid.iterrows():
    r, k = losses.index(c["loss"]), variants.index(c["variant"])
    text = f"{c['mean']:.3f}\n[{c['ci_low']:.2f}, {c['ci_high']:.2f}]"
    light = im.norm(c["mean"]) > 0.6  # viridis turns yellow: dark text there
    axes[1].text(k, r, text, ha="center", va="center", fontsize=7, color="k" if light else "w")
fig.colorbar(im, ax=axes[1], label="mean test macro-F1")
axes[1].set_title("mean macro-F1 [95% interval]")
save(fig, "macro_f1_loss_sampler")

# %% [markdown]
# ## Per-class recall
# Mean over seeds of each class's test recall, configurations sorted by macro-F1 (best on top).
# Where the rare classes (`df`, `vasc`, `akiec`) lose is what a macro-F1 average hides.

# %%
order = [c for c in table["configuration"] if c in set(runs["configuration"])]
recall_cols = [f"recall_{c}" for c in CLASSES]
recall_matrix = (
    runs.reindex(columns=["configuration", *recall_cols])
    .groupby("configuration")[recall_cols]
    .mean()
    .reindex(order)
    .rename(columns=lambda c: c.removeprefix("recall_"))
)
recall_matrix.to_csv(OUT / "recall_by_class.csv")
fig, ax = plt.subplots(figsize=(8, 0.4 * len(order) + 1.8), constrained_layout=True)
im = ax.imshow(recall_matrix.to_numpy(dtype=float), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
ax.set_xticks(range(len(CLASSES)), CLASSES)
ax.set_yticks(range(len(order)), order, fontsize=8)
for (r, k), v in np.ndenumerate(recall_matrix.to_numpy(dtype=float)):
    ax.text(k, r, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
fig.colorbar(im, ax=ax, label="test recall (mean over seeds)")
ax.set_title("per-class recall")
save(fig, "recall_heatmap")
recall_matrix.round(3)

# %% [markdown]
# ## Reliability of the best and the baseline configuration
# Top-label confidence against accuracy (15 equal-width bins, `dermlit.evaluation.calibration`),
# from `predictions.csv`, pooled over the configuration's seeds.

# %%
ranked = table.dropna(subset=["macro_f1_mean"])["configuration"].tolist()
BEST = ranked[0]
is_base = (runs["loss"] == BASELINE_CHOICES["loss"]) & (
    runs["sampler"] == BASELINE_CHOICES["sampler"]
)
base_configs = [c for c in ranked if c in set(runs.loc[is_base, "configuration"])]
BASELINE = base_configs[0] if base_configs else ranked[-1]
BASELINE_REASON = "loss=ce sampler=shuffle" if base_configs else "lowest macro-F1 (no ce+shuffle)"
print(f"best: {BEST}\nbaseline: {BASELINE} ({BASELINE_REASON})")


def pooled_predictions(configuration: str) -> tuple[np.ndarray, np.ndarray]:
    probs, targets = [], []
    for path in runs.loc[runs["configuration"] == configuration, "job"]:
        if (path / "predictions.csv").is_file():
            _, p, t = read_predictions(path / "predictions.csv")
            probs.append(p[t >= 0])
            targets.append(t[t >= 0])
    if not probs:
        return np.empty((0, len(CLASSES))), np.empty(0, dtype=np.int64)
    return np.concatenate(probs), np.concatenate(targets)


reliability = {}
fig, axes = plt.subplots(1, 2, figsize=(11, 5), constrained_layout=True, sharey=True)
for ax, (role, config) in zip(axes, (("best", BEST), ("baseline", BASELINE)), strict=True):
    probs, targets = pooled_predictions(config)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top label)", ylabel="accuracy")
    if len(targets) == 0:
        ax.set_title(f"{role}: {config}\n(no labelled predictions.csv)", fontsize=9)
        continue
    curve = reliability_curve(probs.max(1), probs.argmax(1) == targets)
    reliability[role] = (config, curve, point_metrics(probs, targets)["ece"])
    full = curve.counts > 0
    widths = np.diff(curve.edges)[full]
    ax.bar(curve.centers[full], curve.accuracy[full], widths, alpha=0.35, edgecolor="C0")
    ax.plot(curve.confidence[full], curve.accuracy[full], "o-", ms=3)
    title = f"{role}: {config}\nECE {reliability[role][2]:.3f}, {len(targets)} predictions"
    ax.set_title(title, fontsize=9)
save(fig, "reliability")

# %%
print("Figures:", ", ".join(str(p) for p in FIGURES.values()))
