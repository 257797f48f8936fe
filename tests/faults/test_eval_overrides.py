"""``dermlit-eval`` overrides it would ignore are refused before anything runs or is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir

from dermlit.config import CONF_DIR
from dermlit.evaluate import main
from faults.fault_helpers import assert_refused, run_in_process


def refuse(tmp_path: Path, capsys, *args: str) -> str:
    out = tmp_path / "out"
    status = run_in_process(main, "dermlit-eval", *args, f"output_dir={out}")
    err = capsys.readouterr().err
    assert_refused(status, err, "dermlit-eval: refusing the command:")
    assert not out.exists()  # refused before Hydra creates the output directory
    return err


def test_a_model_override_is_refused_naming_where_the_model_comes_from(tmp_path, capsys):
    run = tmp_path / "RUN"
    err = refuse(tmp_path, capsys, f"run_dir={run}", "+model.backbone.name=resnet34")
    assert "+model.backbone.name=resnet34: conf/eval.yaml defines no 'model.backbone.name'" in err
    assert f"come from the run ({run}/.hydra/resolved.yaml)" in err
    assert "train it with dermlit-train" in err
    # the known settings are read from the composed eval config (groups included)
    assert (
        "own settings (conf/eval.yaml): accelerator, bootstrap_resamples, checkpoint, data," in err
    )
    for group in ("posthoc", "tta", "evaluation/cost"):
        assert group in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["+trainer.max_epochs=3", "+loss=focal"], ["'trainer.max_epochs'", "+loss=focal: "]),
        (["++optim.lr=0.1"], ["++optim.lr=0.1: conf/eval.yaml defines no 'optim.lr'"]),
        (["+lr=0.1"], ["+lr=0.1: conf/eval.yaml defines no 'lr'"]),
        (
            ["data=isic_csv", "data.source.csv=a", "data.source.images=b", "data.image_size=128"],
            ["data.image_size=128: data.image_size comes from the run"],
        ),
        (  # a group under data: it was accepted and the run's split used all the same
            ["data=ham10000", "data/split=by_source", "data/near_duplicates=default"],
            [
                "data/split=by_source: data.split comes from the run",
                "data/near_duplicates=default: data.near_duplicates comes from the run",
            ],
        ),
        (["val_predictions=v.csv"], ["val_predictions=v.csv: read only with predictions=FILE"]),
        (["metadata.csv=m.csv"], ["metadata.csv=m.csv: read only with predictions=FILE"]),
        (
            ["+colour_constancy=shades_of_gray"],
            ["+colour_constancy=shades_of_gray: conf/eval.yaml defines no 'colour_constancy'"],
        ),
    ],
)
def test_other_ignored_overrides_with_a_run(tmp_path, capsys, args, expected) -> None:
    err = refuse(tmp_path, capsys, f"run_dir={tmp_path}/RUN", *args)
    for text in expected:
        assert text in err


def test_checkpoint_options_with_a_predictions_file_and_missing_mode(tmp_path, capsys) -> None:
    err = refuse(tmp_path, capsys, "predictions=p.csv", "checkpoint=last", "tta=dihedral")
    assert "checkpoint=last: with predictions= no model is run" in err
    assert "tta=dihedral: with predictions= no model is run" in err
    err = refuse(tmp_path, capsys, "predictions=p.csv", f"run_dir={tmp_path}")
    assert "not both" in err
    assert "give run_dir=RUN (evaluate its checkpoint) or predictions=FILE" in refuse(
        tmp_path, capsys
    )


def test_overrides_dermlit_eval_reads_are_accepted() -> None:
    from dermlit.eval_overrides import base_config, refused_overrides

    overrides = [
        "run_dir=RUN",
        "data=isic_csv",
        "data.source.csv=gt.csv",
        "data.source.images=img",
        "+data.source.column_map.SCC=akiec",  # an entry of a dict option
        "data.on_error=skip",
        "+evaluation.referral_targets.accuracy=0.9",
        "tta=dihedral",
        "posthoc=logit_adjust",
        "++seed=3",  # an existing key
        "checkpoint=last",
        "hydra.run.dir=x",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert refused_overrides(overrides, base_config(overrides, "eval")) == []
