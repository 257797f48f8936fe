"""One dermlit-eval output directory holds one evaluation: another evaluation into it is
refused (dermlit/eval_output_guard.py). The default directory does not name tta, posthoc or
the cost matrix, so a second evaluation with other settings silently replaced the first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dermlit.evaluate import main
from faults.fault_helpers import assert_refused, run_in_process

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "docs" / "results" / "recipe_search" / "n4_snapshots_3x18"


def test_another_evaluation_into_the_same_directory_is_refused(tmp_path: Path, capsys) -> None:
    for name in ("predictions.csv", "val_predictions.csv"):
        shutil.copy(RUN / name, tmp_path / name)
    out = tmp_path / "eval"
    base = [
        f"predictions={tmp_path / 'predictions.csv'}",
        f"val_predictions={tmp_path / 'val_predictions.csv'}",
        f"output_dir={out}",
        "bootstrap_resamples=20",
        "evaluation.figures=false",
    ]

    def evaluate(*extra: str) -> int:
        return run_in_process(main, "dermlit-eval", *base, *extra)

    assert evaluate("posthoc=class_bias") == 0
    first = json.loads((out / "metrics.json").read_text())
    assert any(k.startswith("posthoc/") for k in first)
    assert evaluate("posthoc=class_bias") == 0  # the same evaluation again replaces itself
    capsys.readouterr()
    status = evaluate()  # no decision rule: another evaluation
    assert_refused(
        status,
        capsys.readouterr().err,
        f"{out} holds another evaluation (",
        "posthoc=class_bias",
        "give this one its own output_dir=DIR, or overwrite=true",
    )
    assert json.loads((out / "metrics.json").read_text()) == first, "refused, yet written"
    assert evaluate("overwrite=true") == 0
    replaced = json.loads((out / "metrics.json").read_text())
    assert not any(k.startswith("posthoc/") for k in replaced)


def test_an_evaluation_whose_settings_record_is_lost_is_not_replaced(
    tmp_path: Path, capsys
) -> None:
    """A corrupt or missing ``.hydra/overrides.yaml`` let the next evaluation replace the
    output silently: what the directory held could not be known, so it was taken as empty."""
    for name in ("predictions.csv", "val_predictions.csv"):
        shutil.copy(RUN / name, tmp_path / name)
    out = tmp_path / "eval"
    command = [
        f"predictions={tmp_path / 'predictions.csv'}",
        f"output_dir={out}",
        "bootstrap_resamples=20",
        "evaluation.figures=false",
    ]
    assert run_in_process(main, "dermlit-eval", *command) == 0
    first = (out / "metrics.json").read_text()
    record = out / ".hydra" / "overrides.yaml"
    record.write_text("- predictions=[unclosed\n  : :\n")
    capsys.readouterr()
    status = run_in_process(main, "dermlit-eval", *command)
    assert_refused(
        status,
        capsys.readouterr().err,
        f"{out} holds another evaluation (its settings cannot be read: {record}",
        "overwrite=true",
    )
    record.unlink()
    status = run_in_process(main, "dermlit-eval", *command)
    assert_refused(status, capsys.readouterr().err, f"its settings are not recorded: no {record}")
    assert (out / "metrics.json").read_text() == first, "refused, yet written"
    assert run_in_process(main, "dermlit-eval", *command, "overwrite=true") == 0
