"""``dermlit archive RUN_DIR DEST``: copy a run's small artefacts where they can be committed.

A run directory holds checkpoints of hundreds of MB; the numbers a README or a paper rests on
need only the files below, a few hundred KB, which survive a lost machine once committed.
``dermlit compare``, ``dermlit sweep-summary`` and ``dermlit-eval predictions=`` all work on an
archived copy as on the run itself.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

#: what is kept, relative to the run directory (missing ones are skipped and listed)
ARTEFACTS = (
    "metrics.json",
    "predictions.csv",
    "val_predictions.csv",
    "status.json",
    "split.json",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/resolved.yaml",
    "csv/metrics.csv",
    "report/report.md",
)
#: without these the copy would not be an evaluated run
REQUIRED = ("metrics.json", "predictions.csv", ".hydra/resolved.yaml")


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
        raise ArchiveError(
            f"{run_dir} is not a finished, evaluated run: missing {missing_required}"
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("dest", type=Path, help="e.g. docs/results/<name>")


def run(args: argparse.Namespace) -> int:
    try:
        absent = archive_run(args.run_dir, args.dest)
    except ArchiveError as err:
        print(f"dermlit archive: {err}", file=sys.stderr)
        return 2
    note = f" (not in the run: {', '.join(absent)})" if absent else ""
    print(f"archived {args.run_dir} -> {args.dest}{note}")
    return 0
