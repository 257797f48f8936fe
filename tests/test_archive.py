"""``dermlit archive``: the small artefacts of a run, copied byte for byte; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermlit.archive import ARTEFACTS, REQUIRED, ArchiveError, archive_run, is_evaluation_dir
from dermlit.cli import main


def fake_run(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "last.ckpt").write_bytes(b"big")
    return root


def test_copies_the_artefacts_and_leaves_the_checkpoints(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", ARTEFACTS[:-1])
    absent = archive_run(run, tmp_path / "kept")
    assert absent == [ARTEFACTS[-1]]
    for name in ARTEFACTS[:-1]:
        assert (tmp_path / "kept" / name).read_text() == f"content of {name}\n"
    assert not (tmp_path / "kept" / "checkpoints").exists()


def test_a_run_without_metrics_is_refused_by_name(tmp_path: Path, capsys) -> None:
    run = fake_run(tmp_path / "run", (".hydra/resolved.yaml", "predictions.csv"))
    with pytest.raises(ArchiveError, match="metrics.json"):
        archive_run(run, tmp_path / "kept")
    assert main(["archive", str(run), str(tmp_path / "kept")]) == 2
    assert "missing ['metrics.json']" in capsys.readouterr().err


def test_keeps_the_train_class_counts_never_the_splits(tmp_path: Path) -> None:
    """class_counts.json (the prior of posthoc=logit_adjust) is archived; splits.csv, a
    per-image list of the dataset's ids and labels, never is."""
    run = fake_run(tmp_path / "run", (*REQUIRED, "class_counts.json", "splits.csv"))
    assert "class_counts.json" in ARTEFACTS and "splits.csv" not in ARTEFACTS
    archive_run(run, tmp_path / "kept")
    kept = tmp_path / "kept"
    assert (kept / "class_counts.json").read_text() == "content of class_counts.json\n"
    assert not (kept / "splits.csv").exists()


def eval_output(root: Path, names: tuple[str, ...]) -> Path:
    """A dermlit-eval output directory: Hydra's .hydra/ of conf/eval.yaml, no resolved.yaml."""
    from omegaconf import OmegaConf

    from dermlit.config import compose_config

    cfg = compose_config("eval", [f"predictions={root.parent}/run/predictions.csv"])
    (root / ".hydra").mkdir(parents=True)
    (root / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (root / ".hydra" / "overrides.yaml").write_text("- posthoc=class_bias\n")
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"content of {name}\n")
    return root


def test_the_cli_archives_a_dermlit_eval_output_directory(tmp_path: Path, capsys) -> None:
    names = ("metrics.json", "predictions.csv", "val_predictions.csv", "report/report.md")
    out = eval_output(tmp_path / "eval" / "decision_bias", names)
    assert is_evaluation_dir(out)
    assert main(["archive", str(out), str(tmp_path / "kept")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"archived the dermlit-eval output {out} -> {tmp_path / 'kept'}")
    for name in (*names, ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (tmp_path / "kept" / name).read_bytes() == (out / name).read_bytes(), name
    assert not (tmp_path / "kept" / ".hydra" / "resolved.yaml").exists()


def test_an_unfinished_evaluation_is_refused_as_one(tmp_path: Path, capsys) -> None:
    out = eval_output(tmp_path / "eval" / "la", ("evaluate.log",))
    assert main(["archive", str(out), str(tmp_path / "kept")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err
    assert "missing ['metrics.json', 'predictions.csv']" in err
    assert "dermlit-eval output directory" in err and "not a finished" not in err
    assert not (tmp_path / "kept").exists()


def test_a_training_run_is_not_taken_for_an_evaluation(tmp_path: Path, capsys) -> None:
    """A training run's config (conf/train.yaml) has no run_dir/predictions: it still needs its
    resolved.yaml."""
    from omegaconf import OmegaConf

    from dermlit.config import compose_config

    run = fake_run(tmp_path / "run", ("metrics.json", "predictions.csv"))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose_config("train")))
    assert not is_evaluation_dir(run)
    assert main(["archive", str(run), str(tmp_path / "kept")]) == 2
    err = capsys.readouterr().err
    assert "missing ['.hydra/resolved.yaml']" in err and "dermlit-train run" in err
