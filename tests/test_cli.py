"""The one subprocess test of the plain ``dermlit`` CLI (its subcommands are tested in-process
through ``dermlit.cli.main``): the console script's module runs, and its exit status is the
subcommand's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_data_check_through_the_entry_point(tiny_ham: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dermlit.cli", "data", "check", str(tiny_ham), "--no-pixels"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "56" in proc.stdout  # 7 classes x 4 lesions x 2 images, all readable
    bad = subprocess.run(
        [*cmd[:5], str(tmp_path / "missing")], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "cannot read the dataset" in bad.stdout, bad.stdout
    # the hint is in this command's terms: DIR, not dermlit-train's data.source.root
    flat = " ".join(bad.stdout.split())
    assert "check DIR" in flat and "data.source" not in flat, bad.stdout


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "HAM10000 metadata not found: /x/m.csv. Expected ...; set data.source.root.",
            "HAM10000 metadata not found: /x/m.csv. Expected ...; check DIR.",
        ),
        (
            "ground truth not found: /x/gt.csv; set data.source.root "
            "(and data.source.ground_truth if renamed)",
            "ground truth not found: /x/gt.csv; check DIR (and -o ground_truth=... if renamed)",
        ),
        (
            "CSV source: /x/l.csv not found (data.source.csv)",
            "CSV source: /x/l.csv not found (-o csv=...)",
        ),
    ],
)
def test_data_check_names_its_own_arguments(message: str, expected: str) -> None:
    """``dermlit data check`` rewrites the sources' dermlit-train keys into DIR and ``-o``."""
    from dermlit.data.cli import in_check_terms

    assert in_check_terms(FileNotFoundError(message)) == expected
    assert in_check_terms(KeyError(message)) == expected  # not str(KeyError)'s quotes


def test_help_lists_every_subcommand(capsys) -> None:
    """``dermlit --help`` (and ``dermlit`` alone) prints each subcommand with its help line.
    It crashed once: argparse %-formats help strings, and "95% CI" is not a format."""
    from dermlit.cli import COMMANDS, main

    for argv in (["--help"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        out = " ".join(capsys.readouterr().out.split())
        for name, (_, help_text) in COMMANDS.items():
            assert name in out and help_text in out, name


def test_composing_a_config_does_not_import_lightning() -> None:
    """``dermlit data check`` composes the train config; Lightning's import (5 s on 2 cores)
    is paid only by the resolvers that need it (the W&B names), when they are resolved."""
    code = (
        "import sys; from dermlit.config import compose_config; "
        "cfg = compose_config('train', ['data=synthetic']); cfg.data.source.n_images; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
