"""Training-loss curves of LookSAM's reuse rules against their base optimizers (and full SAM).

    python benchmarks/looksam_curves.py       # HAM10000, ResNet-18 at 32 px, 80 steps: ~8 min
    python benchmarks/looksam_curves.py --bases adamw sgd \\
        --rules base sam global layerwise global-measured --epochs 12 \\
        --limit-train-batches 0.999 --batch-size 32 --threads 1 \\
        --override data=synthetic data.source.n_images=700 \\
        --out docs/looksam_curves_synthetic.png                  # where the stall shows: ~25 min

For each base (AdamW, SGD: the ``optim=adamw`` / ``optim=sgd`` settings) it trains, one after
the other (never two trainings at once), from the same seed and batch order, on the
``experiment=ham10000_cpu`` recipe (lesion-grouped split, weighted CE) at ``--image-size``:
the base alone (``base``), full SAM (``sam``), and LookSAM with the paper's rule, global
(``global``: ``scale=gradient layerwise=false``, dermlit's first rule) or per tensor
(``layerwise``), and with the measured scale (``global-measured``: the default). No validation
or test: the training loss of every step, and for LookSAM what the reuse rule sees (||g_v|| /
||g_s||, the cosine between consecutive g_v, the per-tensor ratio of the reuse term to the
gradient). Writes the PNG (``--out``) and the numbers beside it (same name, ``.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from dermlit.config import CONF_DIR, register_resolvers
from dermlit.optim import SAM, LookSAM, UpdateRule
from dermlit.optim.sam import global_norm, grads_or_zeros

BASES = {
    "adamw": functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
    "sgd": functools.partial(
        torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    ),
}


class ProbedLookSAM(LookSAM):
    """LookSAM that records, at each full SAM step, ||g_v|| / ||g_s|| and the cosine between
    this g_v and the previous one (the paper's premise: g_v changes slowly), and at each reuse
    step the largest and median per-tensor ||alpha-term|| / ||g||."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.probe: dict[str, list[float]] = {
            "gv_over_gs": [],
            "cos_prev_gv": [],
            "reuse_ratio_median": [],
            "reuse_ratio_max": [],
        }

    def _sam_step(self, module, opt, params, images, targets):
        previous = self._g_v
        loss = super()._sam_step(module, opt, params, images, targets)
        with torch.no_grad():
            g_v, g_s = self._g_v, grads_or_zeros(params)
            self.probe["gv_over_gs"].append(float(global_norm(g_v) / global_norm(g_s)))
            if previous is not None:
                dot = sum(float((a * b).sum()) for a, b in zip(previous, g_v, strict=True))
                cos = dot / float(global_norm(previous) * global_norm(g_v))
                self.probe["cos_prev_gv"].append(cos)
        return loss

    @torch.no_grad()
    def _reuse(self, params) -> None:
        g = [t.clone() for t in grads_or_zeros(params)]
        super()._reuse(params)
        ratios = sorted(
            float((p.grad - gi).norm() / (gi.norm() + 1e-12))
            for p, gi in zip(params, g, strict=True)
        )
        self.probe["reuse_ratio_median"].append(ratios[len(ratios) // 2])
        self.probe["reuse_ratio_max"].append(ratios[-1])


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))


#: rule -> LookSAM(layerwise, scale); "base": the base optimizer alone; "sam": full SAM
RULES = {
    "global": (False, "gradient"),
    "layerwise": (True, "gradient"),
    "global-measured": (False, "measured"),
    "layerwise-measured": (True, "measured"),
}
LABELS = {
    "base": "{b} alone",
    "sam": "SAM (every step)",
    "global": "LookSAM: paper rule, global (old)",
    "layerwise": "LookSAM: paper rule, layer-wise",
    "global-measured": "LookSAM: measured scale, global (new default)",
    "layerwise-measured": "LookSAM: measured scale, layer-wise",
}


def make_optim(base: str, rule: str, epochs: int, k: int, alpha: float, rho: float):
    optimizer = BASES[base]
    scheduler = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)
    if rule == "base":
        return UpdateRule(optimizer, scheduler)
    if rule == "sam":
        return SAM(optimizer, scheduler, rho=rho)
    layerwise, scale = RULES[rule]
    return ProbedLookSAM(
        optimizer, scheduler, rho=rho, k=k, alpha=alpha, layerwise=layerwise, scale=scale
    )


def train_once(args, base: str, rule: str) -> dict:
    register_resolvers()
    overrides = [
        "experiment=ham10000_cpu",
        f"data.image_size={args.image_size}",
        f"data.batch_size={args.batch_size}",
        f"model.backbone.name={args.model}",
        *args.override,
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides)
    L.seed_everything(args.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    model.optim = make_optim(base, rule, args.epochs, args.k, args.alpha, args.rho)
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[recorder],
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    out = {"losses": recorder.losses, "wall_s": time.perf_counter() - start}
    if isinstance(model.optim, ProbedLookSAM):
        out["probe"] = model.optim.probe
    return out


def rounded(value, digits: int = 4):
    """Floats to ``digits`` significant digits, for a small JSON beside the PNG."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def epoch_means(losses: list[float], epochs: int) -> list[float]:
    return [float(np.mean(chunk)) for chunk in np.array_split(np.asarray(losses), epochs)]


def plot(results: dict, args, path: Path) -> None:
    from matplotlib.figure import Figure

    bases = list(dict.fromkeys(key.split("/")[0] for key in results))
    fig = Figure(figsize=(4.6 * len(bases), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(bases), sharey=True))
    style = {
        "base": ("C0", "-"),
        "sam": ("C7", ":"),
        "global": ("C3", "--"),
        "layerwise": ("C1", "--"),
        "global-measured": ("C4", "-"),
        "layerwise-measured": ("C2", "-"),
    }
    window = max(1, args.smooth)
    for ax, base in zip(axes, bases, strict=True):
        for key, res in results.items():
            b, rule = key.split("/")
            if b != base:
                continue
            x = np.asarray(res["losses"])
            smooth = np.convolve(x, np.ones(window) / window, mode="valid")
            color, line = style[rule]
            ax.plot(
                np.arange(window, len(x) + 1),
                smooth,
                line,
                color=color,
                label=LABELS[rule].format(b=base),
            )
        ax.set_title(f"base: {base}")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"training loss ({window}-step mean)")
    fig.suptitle(
        f"{' '.join(args.override) or 'HAM10000'}, {args.model} at {args.image_size} px, batch {args.batch_size}, "
        f"k={args.k}, alpha={args.alpha}, rho={args.rho}",
        fontsize=9,
    )
    fig.savefig(path, dpi=80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bases", nargs="+", default=list(BASES), choices=list(BASES))
    p.add_argument(
        "--rules", nargs="+", default=["base", "global", "layerwise-measured"], choices=list(LABELS)
    )
    p.add_argument("--model", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--limit-train-batches", type=float, default=20)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", nargs="*", default=[], help="more Hydra overrides (data=...)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--smooth", type=int, default=10, help="running-mean window of the plot")
    p.add_argument("--out", type=Path, default=Path("docs/looksam_curves.png"))
    p.add_argument(
        "--reuse-json",
        nargs="*",
        type=Path,
        default=[],
        help="earlier outputs (.json) of the same settings: their runs are kept, not retrained",
    )
    args = p.parse_args()
    if args.limit_train_batches >= 1:  # Lightning: an int is a count, a float <= 1.0 a share
        args.limit_train_batches = int(args.limit_train_batches)
    if args.threads:
        torch.set_num_threads(args.threads)
    json_path = args.out.with_suffix(".json")
    earlier: dict[str, dict] = {}
    for path in args.reuse_json:
        earlier |= json.loads(path.read_text())["results"]
    results: dict[str, dict] = {}
    for base in args.bases:
        for rule in args.rules:
            key = f"{base}/{rule}"
            results[key] = earlier[key] if key in earlier else train_once(args, base, rule)
            means = ", ".join(f"{m:.3f}" for m in epoch_means(results[key]["losses"], args.epochs))
            line = f"{key:18s} epoch-mean training loss: {means}  ({results[key]['wall_s']:.0f} s)"
            probe = results[key].get("probe")
            if probe:
                med = {k: statistics.median(v) for k, v in probe.items() if v}
                line += "  " + " ".join(f"{k}~{v:.2f}" for k, v in med.items())
            print(line, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            settings = {k: str(v) for k, v in vars(args).items()}
            json_path.write_text(json.dumps({"args": settings, "results": rounded(results)}) + "\n")
    plot(results, args, args.out)
    print(f"wrote {args.out} and {json_path}")


if __name__ == "__main__":
    main()
