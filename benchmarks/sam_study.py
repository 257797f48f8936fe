"""The SAM/EMA study of the README's "Does SAM help?": arms x seeds of ``experiment=sam_study``,
run one after another (2 cores: never two trainings at once), each run's small artefacts
archived and committed as soon as it finishes (a replaced machine loses outputs/).

    python benchmarks/sam_study.py run --seeds 0 1 2      # resumable: finished runs are skipped
    python benchmarks/sam_study.py index                  # rebuild docs/results/sam_study/runs.csv
    python benchmarks/sam_study.py table                  # the README table: mean [t-interval]

Arms: ``baseline``, ``ema`` (callbacks=ema), ``sam`` (optim=sam, SAM throughout), ``late_sam``
(optim=sam optim.start=0.8: AdamW, then SAM for the last 20 % of epochs) and ``equal_time``:
the baseline given as many epochs as full SAM's run costs, the ratio measured on the first
seed that has both (``sam`` / ``baseline`` CPU time, rounded to whole epochs).
Compare afterwards with ``dermlit compare --groups docs/results/sam_study/<arm> ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_runs  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "sam_study"
RUNS = REPO / "outputs" / "lead" / "sam_study"
EPOCHS = 12  # conf/experiment/sam_study.yaml
ARMS: dict[str, list[str]] = {
    "baseline": [],
    "ema": ["callbacks=ema"],
    "sam": ["optim=sam"],
    "late_sam": ["optim=sam", "optim.start=0.8"],
    "equal_time": [],  # + trainer.max_epochs from the measured SAM/baseline wall-time ratio
}
#: the README table's columns: headline metrics and the recall of each rare class
TABLE_METRICS = (
    "test/macro_f1",
    "test/balanced_accuracy",
    "test/ece",
    "test/recall_mel",
    "test/recall_bcc",
    "test/recall_akiec",
    "test/recall_df",
    "test/recall_vasc",
)
INDEX_METRICS = (*TABLE_METRICS, "test/accuracy", "test/recall_bkl", "test/recall_nv")


def wall_s(dest: Path) -> float | None:
    path = dest / "time.json"
    return json.loads(path.read_text())["wall_s"] if path.is_file() else None


def cpu_s(dest: Path) -> float | None:
    path = dest / "time.json"
    if not path.is_file():
        return None
    timing = json.loads(path.read_text())
    return timing["user_s"] + timing["sys_s"]


def equal_time_epochs() -> int | None:
    """Epochs of the baseline that cost what full SAM's run cost. From CPU time (user + sys),
    not wall time: on this shared machine a run's wall time depends on what else ran."""
    for base in sorted((RESULTS / "baseline").glob("seed*")):
        sam = RESULTS / "sam" / base.name
        if cpu_s(base) and cpu_s(sam):
            return round(EPOCHS * cpu_s(sam) / cpu_s(base))
    return None


def run_one(arm: str, seed: int) -> bool:
    dest = RESULTS / arm / f"seed{seed}"
    if (dest / "metrics.json").is_file():
        return True
    overrides = [*ARMS[arm]]
    if arm == "equal_time":
        epochs = equal_time_epochs()
        if epochs is None:
            print("equal_time: no seed with both baseline and sam yet; skipped")
            return False
        overrides.append(f"trainer.max_epochs={epochs}")
    run_dir = RUNS / arm / f"seed{seed}"
    cmd = [str(REPO / ".venv" / "bin" / "dermlit-train"), "experiment=sam_study", f"seed={seed}"]
    cmd += [*overrides, f"hydra.run.dir={run_dir}"]
    return study_runs.run_and_archive(
        REPO,
        cmd,
        out_dir=run_dir,
        dest=dest,
        log_path=RUNS / f"{arm}_seed{seed}.log",
        record={"overrides": overrides},
        message=f"SAM study: {arm} seed {seed} ({{wall_s:.0f}} s wall)",
        finish=refresh_index,
    )


def refresh_index(dest: Path) -> list[Path]:
    """After each run: the index over all archived runs, committed with the run."""
    write_index()
    return [RESULTS / "runs.csv"]


def write_index() -> pd.DataFrame:
    rows = []
    for metrics_file in sorted(RESULTS.glob("*/seed*/metrics.json")):
        dest = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        row = {
            "arm": dest.parent.name,
            "seed": int(dest.name.removeprefix("seed")),
            "run": str(dest.relative_to(REPO)),
        }
        row |= {key: metrics.get(key) for key in INDEX_METRICS}
        row["wall_s"] = wall_s(dest)
        rows.append(row)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "runs.csv", index=False)
    return table


def mean_interval(values: pd.Series) -> str:
    """Mean over seeds with the 95 % t-interval (seed variance only: the per-run test-image
    intervals are in each metrics.json, the paired deltas in ``dermlit compare --groups``)."""
    from scipy import stats

    values = values.dropna()
    if len(values) < 2:
        return f"{values.mean():.3f} (n={len(values)})"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5
    return f"{values.mean():.3f} [{values.mean() - half:.3f}, {values.mean() + half:.3f}]"


def table() -> str:
    """Cost is not a column: runs' CPU and wall times on this shared machine depend on what
    else ran (README "Does SAM help?"); cost comes from benchmarks/optim_overhead.py."""
    runs = write_index()
    names = [m.removeprefix("test/") for m in TABLE_METRICS]
    lines = [
        "| arm | seeds | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---" for _ in names) + " |",
    ]
    for arm in [a for a in ARMS if a in set(runs["arm"])]:
        group = runs[runs["arm"] == arm]
        cells = [mean_interval(group[m]) for m in TABLE_METRICS]
        lines.append(f"| {arm} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    sub.add_parser("index")
    sub.add_parser("table")
    args = parser.parse_args()
    if args.action == "table":
        print(table())
        return
    if args.action == "index":
        print(write_index().to_string(index=False))
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:  # seed-major: every arm gets seed 0 before any gets seed 1
        for arm in args.arms:
            run_one(arm, seed)
    print(write_index().to_string(index=False))


if __name__ == "__main__":
    main()
