"""The 30-minute recipe search of docs/recipes.md section 7 (issue 17): candidate recipes run one
after another, each alone on the cores under ``/usr/bin/time``, each finished run's small
artefacts archived into ``docs/results/recipe_search/<candidate>/`` (with ``time.txt``) and
committed at once (a replaced machine loses outputs/).

    python benchmarks/recipe_search.py run n1_64px_54ep n2_96px_36ep   # resumable, in order
    python benchmarks/recipe_search.py table                           # docs/recipes.md rows

A candidate is an override list on ``dermlit-train``. The choice between candidates is made on
the ``val/*`` columns of the table; the test columns exist because every run is tested at its
end (docs/recipes.md lists them all, chosen or not). Run the script under /work/bin/heavy.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from dermlit.archive import archive_run
from dermlit.evaluation.formatting import ci_label, fmt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_runs  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "recipe_search"
RUNS = REPO / "outputs" / "recipe_search"
#: every candidate spells out what it changes, so that the list stays true when the recipe file
#: becomes the chosen candidate
FAST = ["experiment=ham10000_cpu_best", "trainer=cpu_fast"]
#: candidate -> dermlit-train overrides
CANDIDATES: dict[str, list[str]] = {
    # the recipe before issue 17 (section 2's C3), re-run: the reference of `dermlit compare`
    "c3_old_recipe": [
        "experiment=ham10000_cpu_best",
        "trainer=cpu",
        "data.image_size=64",
        "trainer.max_epochs=32",
    ],
    # the bf16 gain spent on epochs at 64 px (29.5 s an epoch measured: 54 fit in 28 min)
    "n1_64px_54ep": [*FAST, "data.image_size=64", "trainer.max_epochs=54"],
    # ... or on resolution: 96 px at 43.5 s an epoch, 36 epochs
    "n2_96px_36ep": [*FAST, "data.image_size=96", "trainer.max_epochs=36"],
    # the chosen recipe on the source-shift benchmark (test = rosendahl, issue 19 item 4)
    "loso_rosendahl": [
        "experiment=ham10000_cpu_best",
        "data/split=by_source",
        "data.split.test_sources=[rosendahl]",
    ],
}
COLUMNS = ("macro_f1", "balanced_accuracy", "recall_mel", "ece")


def run_one(name: str) -> bool:
    dest = RESULTS / name
    if (dest / "metrics.json").is_file():
        print(f"{name}: archived already")
        return True
    run_dir = RUNS / name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an unfinished earlier attempt
    run_dir.mkdir(parents=True)
    time_txt = RUNS / f"{name}.time.txt"
    cmd = [
        "/usr/bin/time",
        "-v",
        "-o",
        str(time_txt),
        sys.executable,
        "-m",
        "dermlit.train",
        *CANDIDATES[name],
        f"hydra.run.dir={run_dir}",
    ]
    status, timing = study_runs.timed(REPO, cmd, RUNS / f"{name}.log")
    if status != 0:
        print(f"{name}: exit {status}, see {RUNS}/{name}.log")
        return False
    archive_run(run_dir, dest)
    shutil.copyfile(time_txt, dest / "time.txt")
    record = {**timing, "overrides": CANDIDATES[name]}
    (dest / "time.json").write_text(json.dumps(record, indent=2) + "\n")
    study_runs.commit(REPO, [dest], f"Recipe search: {name} ({timing['wall_s'] / 60:.1f} min wall)")
    return True


def best_epoch_val(dest: Path) -> str:
    """The best per-epoch validation macro-F1 of the weights that were tested (the EMA's when
    the run kept one) and its epoch, from the run's csv log."""
    log = pd.read_csv(dest / "csv" / "metrics.csv")
    column = "val_ema/macro_f1" if "val_ema/macro_f1" in log else "val/macro_f1"
    scores = log.dropna(subset=[column])
    best = scores.loc[scores[column].idxmax()]
    return f"{fmt(best[column])} (epoch {int(best['epoch'])})"


def with_ci(metrics: dict, key: str) -> str:
    return f"{fmt(metrics.get(key))} {ci_label(metrics, key)}".strip()


def row(name: str) -> str | None:
    dest = RESULTS / name
    if not (dest / "metrics.json").is_file():
        return None
    metrics = json.loads((dest / "metrics.json").read_text())
    wall = json.loads((dest / "time.json").read_text())["wall_s"] / 60
    epochs = re.search(r"max_epochs=(\d+)", " ".join(CANDIDATES[name]))
    cells = [f"`{name}`", " ".join(f"`{o}`" for o in CANDIDATES[name])]
    cells += [best_epoch_val(dest), fmt(metrics.get("val/macro_f1"))]
    cells += [with_ci(metrics, f"test/{c}") for c in COLUMNS]
    cells += [f"{wall:.1f} min", epochs.group(1) if epochs else ""]
    return "| " + " | ".join(cells) + " |"


def table() -> str:
    head = (
        "| candidate | overrides | best epoch val macro-F1 | val macro-F1 (final decisions) "
        "| test macro-F1 | test balanced accuracy | test melanoma recall | test ECE | wall time "
        "| epochs |\n" + "| --- " * 10 + "|"
    )
    return "\n".join([head, *filter(None, (row(name) for name in CANDIDATES))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("names", nargs="+", choices=sorted(CANDIDATES))
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table())
        return 0
    return 0 if all([run_one(name) for name in args.names]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
