"""`dermlit augment-audit` on a handful of real HAM10000 images (skipped when absent)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from dermlit.augment import audit


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse()
    assert args.n == 500 and args.presets == ["dermoscopy", "standard"] and args.size == 128


def test_audit_writes_table_json_and_gallery(ham_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    args = parse(
        "--data", str(ham_dir), "--n", "12", "--size", "48", "--reference-n", "40",
        "--presets", "none", "dermoscopy", "standard", "--out", str(out),
    )  # fmt: skip
    assert audit.run(args) == 0
    report = json.loads((out / "audit.json").read_text())
    assert set(report["presets"]) == {"none", "dermoscopy", "standard"}
    none = report["presets"]["none"]["all"]
    # The identity changes nothing, and its colours are exactly the originals'.
    assert none["asymmetry_p95"] == 0 and none["compactness_p95"] == 0
    assert none["outside_ellipsoid"] == report["original"]["all"]["outside_ellipsoid"]
    std = report["presets"]["standard"]["all"]
    assert (
        std["colour_shift_dE_median"]
        > report["presets"]["dermoscopy"]["all"]["colour_shift_dE_median"]
    )
    table = (out / "audit.md").read_text()
    assert "| dermoscopy | all (n=" in table and "outside ellipsoid" in table
    png = out / "gallery.png"
    with Image.open(png) as img:
        assert img.width == 4 * 48  # original + three presets
    assert png.stat().st_size < 500_000


def test_bad_arguments_are_refused_in_one_line_before_any_image(tmp_path: Path, capsys) -> None:
    """Through the CLI: exit status 2 and ``dermlit augment-audit: <what and how>``, no
    traceback (they were a FileNotFoundError / ValueError traceback once)."""
    from dermlit.cli import main

    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n")  # no images
    cases = [
        (["--data", str(tmp_path / "missing")], "no HAM10000_metadata.csv in"),
        (["--data", str(tmp_path), "--n", "1"], "--n must be at least 2, got 1"),
        (["--data", str(tmp_path), "--presets", "dermoscopy", "nope"], "unknown augment preset"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["augment-audit", *argv, "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("dermlit augment-audit: ") and message in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "known: ['dermoscopy', 'dermoscopy_wide', 'none', 'standard']" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # ~80 s: fewer lesions make the 2 % colour target a matter of 1-2 lesions
def test_the_wide_colour_preset_stays_faithful(ham_dir: Path, tmp_path: Path) -> None:
    """augment=dermoscopy_wide (colour ranges of the measured between-source spread) meets the
    faithful preset's targets on lesions inside the frame (docs/augment/wide/ has n=500)."""
    out = tmp_path / "audit"
    args = parse(
        "--data", str(ham_dir), "--n", "400", "--size", "64", "--reference-n", "3000",
        "--presets", "dermoscopy_wide", "--gallery-per-class", "1", "--out", str(out),
    )  # fmt: skip
    assert audit.run(args) == 0
    row = json.loads((out / "audit.json").read_text())["presets"]["dermoscopy_wide"]
    assert all(row["inside_frame"]["targets_met"].values()), row["inside_frame"]
