"""Per-epoch validation curves of runs side by side, from each run's ``csv/metrics.csv``: did a
change of numerics (e.g. ``trainer=cpu_fast``, bf16) change what the model learns?

    python benchmarks/val_curves.py fp32=outputs/cpu_fast/fp32 bf16=outputs/cpu_fast/bf16_cl

Prints a markdown table: epoch, then ``val/macro_f1``, ``val/loss`` and ``train/loss_epoch`` of
every run, and the test macro-F1 of each run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

COLUMNS = ("val/macro_f1", "val/loss", "train/loss_epoch")


def epoch_table(run_dir: Path) -> pd.DataFrame:
    """One row per epoch: the epoch-level columns of the run's logged metrics."""
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")
    missing = [c for c in COLUMNS if c not in logged]
    if missing:
        raise SystemExit(f"{run_dir}/csv/metrics.csv has no {missing}")
    rows = logged.dropna(subset=["epoch"])
    return rows.groupby("epoch")[list(COLUMNS)].max().dropna(how="all")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    args = p.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)
    tables = {name: epoch_table(Path(d)) for name, d in runs.items()}
    header = ["epoch"] + [f"{c} {n}" for c in COLUMNS for n in runs]
    print("| " + " | ".join(header) + " |\n|" + " ---: |" * len(header))
    for epoch in sorted(set().union(*(t.index for t in tables.values()))):
        cells = [
            f"{tables[n].at[epoch, c]:.4f}" if epoch in tables[n].index else ""
            for c in COLUMNS
            for n in runs
        ]
        print(f"| {int(epoch)} | " + " | ".join(cells) + " |")
    for name, d in runs.items():
        m = json.loads((Path(d) / "metrics.json").read_text())
        f1 = m["test/macro_f1"]
        ci = f"[{m.get('test/macro_f1_ci_low', float('nan')):.3f}, {m.get('test/macro_f1_ci_high', float('nan')):.3f}]"
        print(
            f"\n{name}: test macro-F1 {f1:.3f} {ci}, best val macro-F1 "
            f"{tables[name]['val/macro_f1'].max():.4f} (epoch {int(tables[name]['val/macro_f1'].idxmax())})"
        )


if __name__ == "__main__":
    main()
