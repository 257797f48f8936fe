"""The source-shift benchmarks of the README's "External validity": arms x benchmarks, run one
after another (2 cores: never two trainings at once), each finished run's small artefacts
archived into ``docs/results/source_shift/<benchmark>/<arm>/`` and committed at once (a
replaced machine loses outputs/).

    python benchmarks/source_shift.py run                     # resumable: archived runs skipped
    python benchmarks/source_shift.py run --benchmarks loso_rosendahl --arms baseline
    python benchmarks/source_shift.py index                   # rebuild .../runs.csv
    python benchmarks/source_shift.py table                   # the README tables

Benchmarks (one recipe, conf/experiment/source_shift_indomain.yaml): ``loso_rosendahl`` (test
on rosendahl, train+val on the Vienna sources), ``loso_vidir_modern`` (test on vidir_modern;
why this one: its yaml), ``indomain`` (the ordinary lesion-grouped split). Arms are override
lists: trained arms (:data:`ARMS`) train a run; evaluation-only arms (:data:`EVAL_ARMS`)
re-evaluate a trained arm's run with ``dermlit-eval run_dir=RUN`` plus their overrides into
their own ``output_dir`` (the run's metrics.json is never touched), no retraining. A lever's
config name changing changes only these dicts. Run this whole script under /work/bin/heavy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dermlit.constants import CLASSES
from dermlit.evaluation.formatting import ci_label, fmt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_runs  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "source_shift"
RUNS = REPO / "outputs" / "source_shift"
#: benchmark -> experiment (conf/experiment/)
BENCHMARKS: dict[str, str] = {
    "loso_rosendahl": "ham10000_loso_rosendahl",
    "loso_vidir_modern": "ham10000_loso_vidir_modern",
    "indomain": "source_shift_indomain",
}
#: trained arms: dermlit-train overrides on top of the benchmark's experiment
ARMS: dict[str, list[str]] = {
    "baseline": [],
    "sog": ["colour_constancy=shades_of_gray"],
    "wide_colour": ["augment=dermoscopy_wide"],
    "sog_wide": ["colour_constancy=shades_of_gray", "augment=dermoscopy_wide"],
}
#: evaluation-only arms: (the trained arm whose run is re-evaluated, dermlit-eval overrides)
EVAL_ARMS: dict[str, tuple[str, list[str]]] = {
    "adabn": ("baseline", ["evaluation.adabn=true"]),
    "prior_em": ("baseline", ["posthoc=prior_em"]),
    # the per-class bias fitted on the source's validation split: does it travel?
    "class_bias": ("baseline", ["posthoc=class_bias"]),
    "class_bias_prior_em": ("baseline", ["posthoc=class_bias_prior_em"]),
    # every lever together: colour constancy + wide colour (trained), AdaBN + EM (evaluation)
    "all": ("sog_wide", ["evaluation.adabn=true", "posthoc=prior_em"]),
}
#: the table's headline columns (each with its CI from metrics.json)
HEADLINE = ("macro_f1", "balanced_accuracy", "recall_mel", "ece")
INDEX_METRICS = (
    *(f"test/{m}" for m in (*HEADLINE, "accuracy")),
    *(f"test/recall_{c}" for c in CLASSES if c != "mel"),
    "val/macro_f1",
    "val/balanced_accuracy",
)


def class_prior(labels: pd.Series) -> dict[str, float]:
    counts = labels.value_counts()
    total = max(int(counts.sum()), 1)
    return {c: round(float(counts.get(c, 0)) / total, 5) for c in CLASSES}


def write_priors(run_dir: Path, dest: Path) -> None:
    """``priors.json``: the train and test class priors of the run's split (splits.csv is not
    archived) and their total-variation distance, the size of the label shift."""
    splits = pd.read_csv(run_dir / "splits.csv")
    train = class_prior(splits.loc[splits["split"] == "train", "label"])
    test = class_prior(splits.loc[splits["split"] == "test", "label"])
    tv = 0.5 * sum(abs(train[c] - test[c]) for c in CLASSES)
    data = {"train": train, "test": test, "total_variation": round(tv, 5)}
    (dest / "priors.json").write_text(json.dumps(data, indent=2) + "\n")


def train_one(benchmark: str, arm: str) -> bool:
    run_dir = RUNS / benchmark / arm
    overrides = [f"experiment={BENCHMARKS[benchmark]}", *ARMS[arm]]

    def priors_and_index(dest: Path) -> list[Path]:
        write_priors(run_dir, dest)
        write_index()
        return [RESULTS / "runs.csv"]

    return study_runs.run_and_archive(
        REPO,
        [sys.executable, "-m", "dermlit.train", *overrides, f"hydra.run.dir={run_dir}"],
        out_dir=run_dir,
        dest=RESULTS / benchmark / arm,
        log_path=RUNS / f"{benchmark}_{arm}.log",
        record={"overrides": overrides},
        message=f"Source shift: {benchmark} {arm} ({{wall_s:.0f}} s wall)",
        finish=priors_and_index,
    )


def eval_one(benchmark: str, arm: str) -> bool:
    """Re-evaluate the trained arm's run (its checkpoint, in outputs/) with the arm's overrides
    into a directory of its own."""
    base, extra = EVAL_ARMS[arm]

    def priors_and_index(dest: Path) -> list[Path]:
        shutil.copyfile(RESULTS / benchmark / base / "priors.json", dest / "priors.json")
        write_index()
        return [RESULTS / "runs.csv"]

    return study_runs.reevaluate(
        REPO,
        RUNS / benchmark / base,
        extra,
        out_dir=RUNS / benchmark / f"{base}.eval" / arm,
        dest=RESULTS / benchmark / arm,
        log_path=RUNS / f"{benchmark}_{arm}.log",
        message=f"Source shift: {benchmark} {arm} (re-evaluation of {base})",
        record={"re_evaluates": f"{benchmark}/{base}"},
        finish=priors_and_index,
    )


def write_index() -> pd.DataFrame:
    rows = []
    for metrics_file in sorted(RESULTS.glob("*/*/metrics.json")):
        dest = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        row = {"benchmark": dest.parent.name, "arm": dest.name, "run": str(dest.relative_to(REPO))}
        row |= {key: metrics.get(key) for key in INDEX_METRICS}
        priors = dest / "priors.json"
        row["prior_tv"] = (
            json.loads(priors.read_text()).get("total_variation") if priors.is_file() else None
        )
        timing = dest / "time.json"
        row["wall_s"] = json.loads(timing.read_text())["wall_s"] if timing.is_file() else None
        rows.append(row)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "runs.csv", index=False)
    return table


def with_ci(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    shown = fmt(value) if isinstance(value, int | float) and np.isfinite(value) else "n/a"
    ci = ci_label(metrics, key)
    return shown + (f" {ci}" if ci else "")


def table() -> str:
    """Per benchmark: each arm's headline metrics with CIs and per-class recall, then the
    train and test class priors and their total-variation distance (the label shift)."""
    write_index()
    out = []
    arm_order = [*ARMS, *EVAL_ARMS]
    for benchmark in BENCHMARKS:
        folder = RESULTS / benchmark
        arms = [a for a in arm_order if (folder / a / "metrics.json").is_file()]
        if not arms:
            continue
        out += [f"### {benchmark} (experiment={BENCHMARKS[benchmark]})", ""]
        recalls = [f"recall {c}" for c in CLASSES]
        # validation (the kept sources) is what a lever is chosen on; test is the held-out one
        out.append("| arm | val macro_f1 | " + " | ".join([*HEADLINE, *recalls]) + " |")
        out.append("| --- | --- |" + " --- |" * (len(HEADLINE) + len(recalls)))
        for arm in arms:
            m = json.loads((folder / arm / "metrics.json").read_text())
            cells = [fmt(m.get("val/macro_f1")), *(with_ci(m, f"test/{k}") for k in HEADLINE)]
            cells += [fmt(m.get(f"test/recall_{c}")) for c in CLASSES]
            out.append(f"| {arm} | " + " | ".join(cells) + " |")
        priors_file = folder / arms[0] / "priors.json"
        if priors_file.is_file():
            priors = json.loads(priors_file.read_text())
            out += ["", "| class prior | " + " | ".join(CLASSES) + " |"]
            out.append("| --- |" + " --- |" * len(CLASSES))
            for side in ("train", "test"):
                out.append(
                    f"| {side} | " + " | ".join(f"{priors[side][c]:.3f}" for c in CLASSES) + " |"
                )
            diff = " | ".join(f"{priors['test'][c] - priors['train'][c]:+.3f}" for c in CLASSES)
            out.append(f"| test - train | {diff} |")
            out.append("")
            out.append(f"Total-variation distance train vs test: {priors['total_variation']:.3f}.")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run")
    run.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    all_arms = [*ARMS, *EVAL_ARMS]
    run.add_argument("--arms", nargs="+", default=all_arms, choices=all_arms)
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
    trained = [a for a in args.arms if a in ARMS]
    evaluated = [a for a in args.arms if a in EVAL_ARMS]
    for benchmark in args.benchmarks:  # benchmark-major: every arm on the first one first
        for arm in trained:
            train_one(benchmark, arm)
        for arm in evaluated:
            eval_one(benchmark, arm)
    print(write_index().to_string(index=False))


if __name__ == "__main__":
    main()
