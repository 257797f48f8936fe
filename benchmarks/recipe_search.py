"""The 30-minute recipe search of docs/recipes.md sections 7-8 (issue 17): candidate recipes run one
after another, each alone on the cores under ``/usr/bin/time``, each finished run's small
artefacts archived into ``docs/results/recipe_search/<candidate>/`` (with ``time.txt``) and
committed at once (a replaced machine loses outputs/).

    python benchmarks/recipe_search.py run n1_64px_54ep n2_96px_36ep   # resumable, in order
    python benchmarks/recipe_search.py eval n1_64px_54ep                # other decision rules
    python benchmarks/recipe_search.py eval n4_snapshots_3x18 --weights snapshots snapshots_raw
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
import yaml

from dermlit.data.sources.ham10000 import METADATA_FILE
from dermlit.evaluation.formatting import ci_label, fmt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_runs  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "recipe_search"
RUNS = REPO / "outputs" / "recipe_search"
#: every candidate spells out what it changes, so that the list stays true when the recipe file
#: becomes the chosen candidate
FAST = ["experiment=ham10000_cpu_best", "trainer=cpu_fast"]
#: the single cosine of the candidates before the recipe took the restarting one (section 9)
ONE_COSINE = "optim=adamw"
#: the decision rule every candidate ran with: the class bias on validation macro-F1 alone (the
#: recipe file's floors came after; the other rules are DECISIONS, re-evaluated)
MACRO_F1_RULE = ["posthoc.objective=macro_f1", "posthoc.floors=null"]
#: n6 (docs/recipes.md section 11): n4's 64 px training on 3 restarting cycles of 16 epochs with
#: late-phase SAM (rho 0.05 around AdamW) from epoch 38
LATE_SAM_3X16 = [
    *FAST,
    *MACRO_F1_RULE,
    "data.image_size=64",
    "trainer.max_epochs=48",
    "optim=sam",
    "optim.start=0.8",
    "optim.scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
    "~optim.scheduler.T_max",
    "+optim.scheduler.T_0=16",
]
#: n7 (docs/recipes.md section 12): n4's training (64 px, 3 restarting cycles of 18 epochs) with
#: label smoothing and dropout before the classifier
REGULARISED_3X18 = [
    *FAST,
    *MACRO_F1_RULE,
    "data.image_size=64",
    "trainer.max_epochs=54",
    "optim=adamw_restarts",
    "loss.label_smoothing=0.1",
    "model.backbone.drop_rate=0.2",
]
#: candidate -> dermlit-train overrides
CANDIDATES: dict[str, list[str]] = {
    # the recipe before issue 17 (section 2's C3), re-run: the reference of `dermlit compare`
    "c3_old_recipe": [
        "experiment=ham10000_cpu_best",
        *MACRO_F1_RULE,
        "trainer=cpu",
        ONE_COSINE,
        "data.image_size=64",
        "trainer.max_epochs=32",
    ],
    # the bf16 gain spent on epochs at 64 px (29.5 s an epoch measured: 54 fit in 28 min)
    "n1_64px_54ep": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=64",
        "trainer.max_epochs=54",
    ],
    # n1 again with another training seed (same split): the seed spread of the chosen training
    "n1_seed1_64px_54ep": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "seed=1",
    ],
    # ... or on resolution: 96 px at 43.5 s an epoch, 36 epochs
    "n2_96px_36ep": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=96",
        "trainer.max_epochs=36",
    ],
    # batch 128 (1.16x an epoch's images/s, docs/results/throughput/scaling/) spent on 80 px:
    # 37.2 s x 0.86 x 1.08 (n1's full-run overhead) = 34.7 s an epoch, 48 epochs in 28 min. The
    # learning rate scaled by sqrt(2) for the doubled batch (AdamW), the EMA decay per step
    # halved in 1 - decay so that it still averages over the same number of epochs. Stopped at
    # epoch 13 for time: 60 s an epoch on the AMD EPYC of a later session (section 8)
    "n3_80px_b128_48ep": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=80",
        "data.batch_size=128",
        "optim.optimizer.lr=1.41e-3",
        "callbacks.ema.decay=0.998",
        "trainer.max_epochs=48",
    ],
    # n1's budget (54 epochs at 64 px) spent on a snapshot ensemble: 3 cosine cycles of 18
    # epochs (SGDR), a snapshot at each cycle's end; the run tests its best EMA epoch as every
    # candidate does, and the ensemble of the 3 snapshots is re-evaluated (ENSEMBLES)
    "n4_snapshots_3x18": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "optim=adamw_restarts",
        "callbacks=ema_snapshots",
    ],
    # n4 again with another training seed (same split): decides between n1 and n4 on two seeds'
    # validation (docs/recipes.md section 9)
    "n4_seed1_snapshots_3x18": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "optim=adamw_restarts",
        "callbacks=ema_snapshots",
        "seed=1",
    ],
    # progressive resizing (docs/recipes.md section 10): one LR cycle per size, 48 -> 64 -> 80 px,
    # 17 epochs each; sized to n4's compute (an 80 px epoch ~1.46x a 64 px one on the EPYC,
    # section 8; a 48 px one ~0.6x), validation and test at 80 px. Both seeds ran with the first
    # spelling, absolute sizes (`callbacks.progressive_resize.sizes=[48,64,80]`, commit 8146ffb);
    # scales of data.image_size=80 are the same sizes
    "n5_progressive_48_64_80_51ep": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=80",
        "trainer.max_epochs=51",
        "optim=adamw_restarts",
        "resize=progressive",
        "callbacks.progressive_resize.scales=[0.6,0.8,1.0]",
    ],
    "n5_seed1_progressive_48_64_80_51ep": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=80",
        "trainer.max_epochs=51",
        "optim=adamw_restarts",
        "resize=progressive",
        "callbacks.progressive_resize.scales=[0.6,0.8,1.0]",
        "seed=1",
    ],
    # late-phase SAM on n4's schedule (docs/recipes.md section 11): 3 restarting cycles of 16
    # epochs, SAM (rho 0.05 around AdamW) from epoch 38, the low-LR part of the last cycle; 48
    # epochs so that 38 plain + 10 SAM epochs (~1.65x a plain one on the EPYC) cost n4's 54
    "n6_late_sam_3x16": LATE_SAM_3X16,
    "n6_seed1_late_sam_3x16": [*LATE_SAM_3X16, "seed=1"],
    # n4's training with a regularised head (docs/recipes.md section 12): label smoothing 0.1
    # and dropout 0.2 before the classifier, against the overconfidence of the EMA's rising
    # validation loss past epoch 20; no compute added, so n4's budget
    "n7_smooth_drop_3x18": REGULARISED_3X18,
    "n7_seed1_smooth_drop_3x18": [*REGULARISED_3X18, "seed=1"],
    # the chosen training (n1) on the source-shift benchmark (test = rosendahl, issue 19 item 4)
    "loso_rosendahl": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "data/split=by_source",
        "data.split.test_sources=[rosendahl]",
    ],
    # the recipe since section 9 (the restarting cosine) on the same benchmark
    "loso_rosendahl_restarts": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "data/split=by_source",
        "data.split.test_sources=[rosendahl]",
    ],
    # the 15-minute baseline recipe on the same benchmark (issue 19 item 4)
    "loso_rosendahl_ham10000_cpu": [
        "experiment=ham10000_cpu",
        "data/split=by_source",
        "data.split.test_sources=[rosendahl]",
    ],
    # the second source-shift benchmark (test = vidir_modern, issue 19 item 4): both recipes
    "loso_vidir_modern": [
        *FAST,
        *MACRO_F1_RULE,
        ONE_COSINE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "data/split=by_source",
        "data.split.test_sources=[vidir_modern]",
    ],
    # the recipe since section 9 (the restarting cosine) on the same benchmark
    "loso_vidir_modern_restarts": [
        *FAST,
        *MACRO_F1_RULE,
        "data.image_size=64",
        "trainer.max_epochs=54",
        "data/split=by_source",
        "data.split.test_sources=[vidir_modern]",
    ],
    "loso_vidir_modern_ham10000_cpu": [
        "experiment=ham10000_cpu",
        "data/split=by_source",
        "data.split.test_sources=[vidir_modern]",
    ],
}
#: the old recipe's validation scores, rounded down: a decision "not below" them keeps them
OLD_VAL_FLOORS = {"balanced_accuracy": 0.638, "recall_mel": 0.538}
#: decision rules re-evaluated on a candidate's predictions (dermlit-eval, no retraining; see
#: eval_one): the candidates' own class bias maximises validation macro-F1, which can cost
#: melanoma recall
DECISIONS: dict[str, list[str]] = {
    "no_bias": ["posthoc=none"],
    # section 7's choice
    "bias_balanced_accuracy": ["posthoc=class_bias", "posthoc.objective=balanced_accuracy"],
    "bias_macro_f1": ["posthoc=class_bias", "posthoc.objective=macro_f1"],
    # the selection rule moved into the fit: the best validation macro-F1 among the biases whose
    # validation balanced accuracy and melanoma recall are not below the old recipe's
    # (c3_old_recipe/metrics.json: val/balanced_accuracy 0.6382, val/recall_mel 0.5389); the
    # rule ham10000_cpu_best.yaml sets (section 8)
    "bias_macro_f1_floors": [
        "posthoc=class_bias",
        "posthoc.objective=macro_f1",
        f"posthoc.floors={{balanced_accuracy:{OLD_VAL_FLOORS['balanced_accuracy']},"
        f"recall_mel:{OLD_VAL_FLOORS['recall_mel']}}}",
    ],
}
#: the weights a candidate's decision rules are re-evaluated on: the tested checkpoint (the
#: run's best epoch), or a snapshot ensemble's members (their EMA weights, or their raw weights,
#: taken where each cycle's LR is lowest)
WEIGHTS: dict[str, list[str]] = {
    "best": [],
    "snapshots": ["checkpoint=snapshots"],
    "snapshots_raw": ["checkpoint=snapshots", "weights=raw"],
}
COLUMNS = ("macro_f1", "balanced_accuracy", "recall_mel", "ece")


def run_one(name: str) -> bool:
    run_dir = RUNS / name
    time_txt = RUNS / f"{name}.time.txt"
    cmd = ["/usr/bin/time", "-v", "-o", str(time_txt), sys.executable, "-m", "dermlit.train"]
    cmd += [*CANDIDATES[name], f"hydra.run.dir={run_dir}"]

    def keep_time_txt(dest: Path) -> list[Path]:
        shutil.copyfile(time_txt, dest / "time.txt")
        return []

    return study_runs.run_and_archive(
        REPO,
        cmd,
        out_dir=run_dir,
        dest=RESULTS / name,
        log_path=RUNS / f"{name}.log",
        record={"overrides": CANDIDATES[name]},
        message=f"Recipe search: {name} ({{wall_min:.1f}} min wall)",
        finish=keep_time_txt,
    )


def decision_dir(name: str, decision: str, weights: str = "best") -> Path:
    """``<candidate>/decision_<rule>`` for the tested checkpoint, else
    ``<candidate>/<weights>/decision_<rule>``."""
    base = RESULTS / name if weights == "best" else RESULTS / name / weights
    return base / f"decision_{decision}"


def eval_one(name: str, decision: str, weights: str = "best") -> bool:
    """Candidate ``name`` with another decision rule (on other ``weights``: :data:`WEIGHTS`), into
    :func:`decision_dir`: ``no_bias`` from the checkpoint(s) (in outputs/), every other rule from
    the archived ``no_bias`` predictions (a decision rule needs no weights, and the archive
    outlives the machine)."""
    from_archive = decision != "no_bias"
    source = decision_dir(name, "no_bias", weights) if from_archive else RUNS / name
    archived = from_archive and (source / "val_predictions.csv").is_file()
    metadata = source_metadata(name) if archived else []
    checkpoint = [] if from_archive else WEIGHTS[weights]
    suffix = "" if weights == "best" else f".{weights}"
    return study_runs.reevaluate(
        REPO,
        source,
        [*metadata, *checkpoint, *DECISIONS[decision]],
        out_dir=RUNS / f"{name}.eval{suffix}" / decision,
        dest=decision_dir(name, decision, weights),
        log_path=RUNS / f"{name}{suffix}.{decision}.log",
        message=f"Recipe search: {name} re-evaluated with {decision}"
        + ("" if weights == "best" else f" on the {weights} weights"),
    )


def source_metadata(name: str) -> list[str]:
    """The dermlit-eval overrides that join the candidate's HAM10000 metadata (its ``dataset``
    column) onto archived predictions, for the per-source metrics a checkpoint evaluation has."""
    resolved = yaml.safe_load((RESULTS / name / ".hydra" / "resolved.yaml").read_text())
    table = Path(resolved["data"]["source"]["root"]) / METADATA_FILE
    return [f"metadata.csv={table}", "metadata.source_column=dataset"]


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


def row(name: str, decision: str | None = None, weights: str = "best") -> str | None:
    """The candidate's table row; with ``decision``, the row of its re-evaluation (on
    ``weights``)."""
    run = RESULTS / name
    dest = decision_dir(name, decision, weights) if decision else run
    if not (dest / "metrics.json").is_file():
        return None
    metrics = json.loads((dest / "metrics.json").read_text())
    wall = json.loads((run / "time.json").read_text())["wall_s"] / 60
    epochs = re.search(r"max_epochs=(\d+)", " ".join(CANDIDATES[name]))
    overrides = [*WEIGHTS[weights], *DECISIONS[decision]] if decision else CANDIDATES[name]
    on = "" if weights == "best" else f" {weights} +"
    label = f"`{name}` +{on} {decision}" if decision else f"`{name}`"
    cells = [label, " ".join(f"`{o}`" for o in overrides)]
    cells += [best_epoch_val(run), fmt(metrics.get("val/macro_f1"))]
    cells += [fmt(metrics.get(f"val/{c}")) for c in ("balanced_accuracy", "recall_mel")]
    cells += [with_ci(metrics, f"test/{c}") for c in COLUMNS]
    cells += [f"{wall:.1f} min", epochs.group(1) if epochs else ""]
    return "| " + " | ".join(cells) + " |"


def table() -> str:
    head = (
        "| candidate | overrides | best epoch val macro-F1 | val macro-F1 (final decisions) "
        "| val balanced accuracy | val melanoma recall "
        "| test macro-F1 | test balanced accuracy | test melanoma recall | test ECE | wall time "
        "| epochs |\n" + "| --- " * 12 + "|"
    )
    rows = [row(n, d) for n in CANDIDATES for d in (None, *DECISIONS)]
    rows += [row(n, d, w) for n in CANDIDATES for w in list(WEIGHTS)[1:] for d in DECISIONS]
    return "\n".join([head, *filter(None, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("names", nargs="+", choices=sorted(CANDIDATES))
    evaluate = sub.add_parser("eval", help="re-evaluate candidates with other decision rules")
    evaluate.add_argument("names", nargs="+", choices=sorted(CANDIDATES))
    evaluate.add_argument("--decisions", nargs="+", choices=sorted(DECISIONS), default=DECISIONS)
    evaluate.add_argument("--weights", nargs="+", choices=sorted(WEIGHTS), default=["best"])
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table())
        return 0
    if args.command == "eval":
        done = [
            eval_one(n, d, w)
            for n in args.names
            for w in args.weights
            for d in sorted(args.decisions, key=lambda d: d != "no_bias")  # its archive first
        ]
        return 0 if all(done) else 1
    return 0 if all([run_one(name) for name in args.names]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
