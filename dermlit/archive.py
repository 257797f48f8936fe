"""``dermlit archive RUN_DIR DEST``: copy a run's small artefacts where they can be committed.

A run directory holds checkpoints of hundreds of MB; the numbers a README or a paper rests on
need only the files below, a few hundred KB, which survive a lost machine once committed.
``dermlit compare``, ``dermlit sweep-summary`` and ``dermlit-eval predictions=`` all work on an
archived copy as on the run itself: ``class_counts.json`` (the TRAIN images per class) stands in
for ``splits.csv``, which is never archived (a per-image list of the dataset's ids and labels),
as the prior of ``posthoc=logit_adjust``.

A ``dermlit-eval`` output directory (its ``.hydra/config.yaml`` names ``run_dir`` and
``predictions``) is archived too: it has no ``resolved.yaml`` (its run's is the config), so it
needs only :data:`EVAL_REQUIRED`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

#: what is kept, relative to the run directory (missing ones are skipped and listed)
ARTEFACTS = (
    "metrics.json",
    "predictions.csv",
    "val_predictions.csv",
    "status.json",
    "split.json",
    "class_counts.json",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/resolved.yaml",
    "csv/metrics.csv",
    "report/report.md",
)
#: without these the copy would not be an evaluated run
REQUIRED = ("metrics.json", "predictions.csv", ".hydra/resolved.yaml")
#: ... nor these a finished ``dermlit-eval`` output directory
EVAL_REQUIRED = ("metrics.json", "predictions.csv")


class ArchiveError(ValueError):
    """The run directory lacks what an archived run must have."""


def archive_run(
    run_dir: str | Path, dest: str | Path, required: tuple[str, ...] = REQUIRED
) -> list[str]:
    """Copy :data:`ARTEFACTS` of ``run_dir`` into ``dest``; returns the ones that were absent.
    ``required``: what must be there (a ``dermlit-eval`` output directory has no
    ``resolved.yaml``: its run's is the config)."""
    run_dir, dest = Path(run_dir), Path(dest)
    missing_required = [name for name in required if not (run_dir / name).is_file()]
    if missing_required:
        what = (
            "a dermlit-eval output directory"
            if is_evaluation_dir(run_dir)
            else "a dermlit-train run"
        )
        raise ArchiveError(
            f"{run_dir} cannot be archived: missing {missing_required}, which {what} holds once "
            "it finished (see its log: evaluate.log, train.log or error.log)"
        )
    absent = []
    for name in ARTEFACTS:
        source = run_dir / name
        if not source.is_file():
            absent.append(name)
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return absent


def is_evaluation_dir(path: str | Path) -> bool:
    """Whether ``path`` is a ``dermlit-eval`` output directory: Hydra's ``.hydra/config.yaml``
    there is conf/eval.yaml's (``run_dir`` and ``predictions`` at the top), not a training's."""
    config = Path(path) / ".hydra" / "config.yaml"
    if not config.is_file():
        return False
    try:
        node = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(node, dict) and "run_dir" in node and "predictions" in node


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path, help="e.g. docs/results/<name>")


def run(args: argparse.Namespace) -> int:
    evaluation = is_evaluation_dir(args.run_dir)
    try:
        absent = archive_run(args.run_dir, args.dest, EVAL_REQUIRED if evaluation else REQUIRED)
    except ArchiveError as err:
        print(f"dermlit archive: {err}", file=sys.stderr)
        return 2
    note = f" (not in the {'evaluation' if evaluation else 'run'}: {', '.join(absent)})"
    kind = "the dermlit-eval output " if evaluation else ""
    print(f"archived {kind}{args.run_dir} -> {args.dest}{note if absent else ''}")
    return 0
