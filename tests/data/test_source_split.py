"""The source-holdout split (data/split=by_source): held-out sources are the test side, groups
that span sources stay on one side, and bad names are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tiny_run import TINY_RUN

from dermlit.constants import CLASSES
from dermlit.data.source_split import SourceHoldout
from dermlit.data.splits import SplitError, link_groups


def constructed(n_lesions: int = 6) -> pd.DataFrame:
    """Three sources, every class in each, 2 images per lesion; lesion X spans rosendahl and
    vidir_modern (one image each)."""
    rows = []
    for source in ("vidir_modern", "vidir_molemax", "rosendahl"):
        for c in CLASSES:
            for k in range(n_lesions):
                lesion = f"{source}_{c}_{k}"
                rows += [(f"{lesion}_{i}", lesion, c, source) for i in range(2)]
    rows += [("X_0", "X", "mel", "rosendahl"), ("X_1", "X", "mel", "vidir_modern")]
    return pd.DataFrame(rows, columns=["image_id", "lesion_id", "label", "dataset"])


def test_held_out_source_is_the_test_side_and_spanning_lesions_go_with_it() -> None:
    df = constructed()
    split, info = SourceHoldout(["rosendahl"], 0.2, seed=3)(
        df, df["lesion_id"], "dataset", "constructed"
    )
    held = df["dataset"] == "rosendahl"
    assert (split[held] == "test").all()  # every rosendahl image in test ...
    assert set(split[~held & (df["lesion_id"] != "X")]) == {"train", "val"}  # ... only them
    # X's vidir_modern image goes to test with its rosendahl twin
    assert split[df["image_id"] == "X_1"].item() == "test"
    assert info["groups_spanning_sources"] == 1 and info["images_moved_to_test"] == 1
    assert info["test_sources"] == ["rosendahl"]
    assert info["train_val_sources"] == ["vidir_modern", "vidir_molemax"]
    per = info["images_per_source_and_split"]
    assert per["rosendahl"] == {"test": int(held.sum())}
    assert per["vidir_modern"]["test"] == 1
    # no lesion on two sides; every class in train and in val
    assert (df.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()
    for side in ("train", "val"):
        assert set(df.loc[split == side, "label"]) == set(CLASSES)
    # val is ~20 % of the kept images
    kept = split != "test"
    assert (split[kept] == "val").mean() == pytest.approx(0.2, abs=0.06)


def test_near_duplicate_groups_spanning_sources_stay_together() -> None:
    df = constructed()
    # a near-duplicate pair joins a vidir_molemax lesion to a rosendahl lesion
    pairs = pd.DataFrame({"image_a": ["vidir_molemax_nv_0_0"], "image_b": ["rosendahl_nv_1_1"]})
    groups = link_groups(df, pairs)
    split, info = SourceHoldout(["rosendahl"])(df, groups, "dataset", "constructed")
    moved = df["lesion_id"] == "vidir_molemax_nv_0"
    assert (split[moved] == "test").all()
    assert info["groups_spanning_sources"] == 2  # X and the joined pair
    assert info["images_moved_to_test"] == 3


def test_two_held_out_sources_and_seeded() -> None:
    df = constructed()
    holdout = SourceHoldout(["rosendahl", "vidir_molemax"], seed=1)
    a, _ = holdout(df, df["lesion_id"], "dataset", "constructed")
    b, _ = holdout(df, df["lesion_id"], "dataset", "constructed")
    assert a.equals(b)
    assert (a[df["dataset"].isin(["rosendahl", "vidir_molemax"])] == "test").all()


@pytest.mark.parametrize(
    ("sources", "column", "message"),
    [
        (["rosendahll"], "dataset", r"no source named \['rosendahll'\].*rosendahl \(85 images\)"),
        (["rosendahl"], None, r"declares no source column"),
        (["rosendahl"], "site", r"source column 'site' is not in the index table"),
        (["rosendahl", "vidir_modern", "vidir_molemax"], "dataset", r"holds out every image"),
    ],
)
def test_refused_with_the_offender_named(sources, column, message) -> None:
    df = constructed()
    with pytest.raises(SplitError, match=message):
        SourceHoldout(sources)(df, df["lesion_id"], column, "constructed")


def test_class_only_in_held_out_sources_is_refused() -> None:
    df = constructed()
    df = df[~((df["label"] == "akiec") & (df["dataset"] != "rosendahl"))]
    with pytest.raises(SplitError, match=r"\['akiec'\] have no image outside the held-out"):
        SourceHoldout(["rosendahl"])(df, df["lesion_id"], "dataset", "constructed")


def test_empty_holdout_refused() -> None:
    with pytest.raises(SplitError, match="test_sources is empty"):
        SourceHoldout([])


def test_by_source_on_the_synthetic_set_trains_in_process(tmp_path: Path, train_in_process):
    """The synthetic source carries a `dataset` column (synth_a, synth_b): a tiny training with
    synth_b held out tests on synth_b only and reports per-source metrics."""
    run = tmp_path / "run"
    train_in_process(run, *TINY_RUN, "data/split=by_source", "data.split.test_sources=[synth_b]")
    splits = pd.read_csv(run / "splits.csv")
    meta = pd.read_csv(Path(_synthetic_root(run)) / "HAM10000_metadata.csv")
    source = splits["image_id"].map(dict(zip(meta["image_id"], meta["dataset"], strict=True)))
    assert (splits.loc[source == "synth_b", "split"] == "test").all()
    assert set(source[splits["split"] != "test"]) == {"synth_a"}
    recorded = json.loads((run / "split.json").read_text())
    assert recorded["split"] == "by_source" and recorded["test_sources"] == ["synth_b"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/source/synth_b/n_images"] == metrics["test/n_labelled"]
    # the test side is synth_b plus the synth_a images of groups that span both
    moved = recorded["images_moved_to_test"]
    assert (splits["split"] == "test").sum() == (source == "synth_b").sum() + moved
    assert not np.isnan(metrics["test/source/synth_b/balanced_accuracy"])


def _synthetic_root(run: Path) -> str:
    import yaml

    return yaml.safe_load((run / ".hydra" / "resolved.yaml").read_text())["data"]["source"]["root"]


@pytest.mark.parametrize("held", ["rosendahl", "vidir_modern"])
def test_real_ham10000_holdout(ham_dir: Path, held: str) -> None:
    """On the real metadata (lesion groups; no decoding): every image of the held-out source in
    test, none in train/val; the 9 lesions with images in vidir_modern and vidir_molemax go to
    the test side whole when vidir_modern is held out."""
    from dermlit.data.sources import HAM10000Source

    df, _ = HAM10000Source(ham_dir).load()
    split, info = SourceHoldout([held])(df, df["lesion_id"], "dataset", "HAM10000")
    is_held = df["dataset"] == held
    assert (split[is_held] == "test").all()
    assert not ((split == "test") & ~is_held & ~df["lesion_id"].isin(_spanning(df))).any()
    assert (df.assign(split=split).groupby("lesion_id")["split"].nunique() == 1).all()
    expected = 9 if held == "vidir_modern" else 0
    assert info["groups_spanning_sources"] == expected == info["images_moved_to_test"]


def _spanning(df: pd.DataFrame) -> set[str]:
    n = df.groupby("lesion_id")["dataset"].nunique()
    return set(n.index[n > 1])
