"""Frozen splits: ``dermlit data split`` writes the split a run uses; ``data.split_file`` trains
on one after validation (errors name the offenders); the run records the file's hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from hydra.utils import instantiate

from dermlit.cli import main as dermlit_main
from dermlit.data.cli import compose_data
from dermlit.data.split_file import SplitFileError, apply_split_file

OVERRIDES = ["data.near_duplicates=null"]


def datamodule(root: Path, cache: Path, *overrides: str):
    cfg = compose_data("ham10000", root, [f"paths.cache_dir={cache}", *overrides])
    data = instantiate(cfg.data)
    data.setup()
    return data


@pytest.fixture
def frozen(tiny_ham: Path, tmp_path: Path) -> Path:
    out = tmp_path / "splits.csv"
    code = dermlit_main(
        ["data", "split", str(tiny_ham), "--out", str(out), "-o", f"paths.cache_dir={tmp_path}/c"]
    )
    assert code == 0
    return out


def test_data_split_writes_the_split_the_config_uses(tiny_ham, tmp_path, frozen) -> None:
    data = datamodule(tiny_ham, tmp_path / "c2")
    written = pd.read_csv(frozen, dtype=str)
    assert written.equals(data.splits.astype(str).reset_index(drop=True))
    assert written.columns.tolist() == ["image_id", "lesion_id", "label", "split", "group"]


def test_training_on_the_file_reproduces_it_and_records_its_hash(
    tiny_ham, tmp_path, frozen
) -> None:
    table = pd.read_csv(frozen, dtype=str)
    # move one whole lesion of a class with 4 lesions from its split to another: still valid
    lesion = table.loc[table["split"] == "train", "lesion_id"].iloc[0]
    label = table.loc[table["lesion_id"] == lesion, "label"].iloc[0]
    table.loc[table["lesion_id"] == lesion, "split"] = "val"
    assert (table.loc[table.label == label].groupby("split").size() > 0).all()
    edited = tmp_path / "edited.csv"
    table.to_csv(edited, index=False)
    data = datamodule(tiny_ham, tmp_path / "c3", f"data.split_file={edited}")
    assert data.splits.astype(str).reset_index(drop=True).equals(table)
    run_dir = tmp_path / "run"
    data.record_dir = run_dir
    data.trainer = SimpleNamespace(is_global_zero=True)
    data.setup("fit")
    info = json.loads((run_dir / "split.json").read_text())
    assert info["split_file_sha256"] == hashlib.sha256(edited.read_bytes()).hexdigest()
    assert info["split"] == "split_file"


def edit(frozen: Path, change) -> Path:
    table = pd.read_csv(frozen, dtype=str, keep_default_na=False)
    table = change(table)
    out = frozen.with_name("bad.csv")
    table.to_csv(out, index=False)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.iloc[1:], r"1 \(IMG_00000\) image\(s\) of the data are not in the file"),
        (
            lambda t: pd.concat([t, t.iloc[[0]].assign(image_id="ZZZ")]),
            r"1 \(ZZZ\) image\(s\) of the file are not in the data",
        ),
        (lambda t: t.assign(split=t.split.where(t.index != 0, "holdout")), r"IMG_00000='holdout'"),
        (
            lambda t: t.assign(
                split=t.split.where(
                    t.image_id != "IMG_00001", "test" if t.split[0] != "test" else "val"
                )
            ),
            r"1 \(L0000 in .*\) lesion_id\(s\) have images in two splits",
        ),
        (
            lambda t: t.assign(label=t.label.where(t.index != 0, "mel")),
            r"labels differ from the data's: 1 \(IMG_00000: file 'mel', data 'akiec'\)",
        ),
        (
            lambda t: t.assign(split=t.split.where(t.label != "df", "train")),
            r"class\(es\) with no image in a split: df in val, df in test",
        ),
    ],
)
def test_invalid_split_files_name_the_offenders(
    tiny_ham, tmp_path, frozen, change, message
) -> None:
    from dermlit.data.sources import HAM10000Source

    df = HAM10000Source(tiny_ham).load()[0]
    with pytest.raises(SplitFileError, match=message):
        apply_split_file(df, edit(frozen, change))


def test_group_across_splits_is_refused(tiny_ham, frozen) -> None:
    from dermlit.data.sources import HAM10000Source

    df = HAM10000Source(tiny_ham).load()[0]

    def join(t):  # two lesions in different splits declared one group
        a = t.loc[t.split == "train", "lesion_id"].iloc[0]
        b = t.loc[t.split == "test", "lesion_id"].iloc[0]
        t.loc[t.lesion_id.isin([a, b]), "group"] = "G"
        return t

    with pytest.raises(SplitFileError, match=r"1 \(G in test\+train\) group\(s\)"):
        apply_split_file(df, edit(frozen, join))


def test_missing_file_and_cli_error_are_one_line(tiny_ham, tmp_path, capsys) -> None:
    with pytest.raises(SplitFileError, match="split file not found"):
        datamodule(tiny_ham, tmp_path / "c", f"data.split_file={tmp_path}/nope.csv")
    code = dermlit_main(
        ["data", "split", str(tmp_path / "absent"), "--out", str(tmp_path / "s.csv")]
    )
    assert code == 2
    assert "split failed" in capsys.readouterr().out


def test_a_datamodule_outside_a_run_writes_nothing_into_the_working_directory(
    tiny_ham, tmp_path, monkeypatch
) -> None:
    """A bare Trainer's default_root_dir is the working directory: fitting a datamodule there
    (a notebook, a test) used to leave a split.json in it."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    data = datamodule(tiny_ham, tmp_path / "c4", *OVERRIDES)
    data.trainer = SimpleNamespace(is_global_zero=True, default_root_dir=str(work))
    data.setup("fit")
    assert list(work.iterdir()) == []


def test_a_group_across_splits_is_refused_when_other_rows_have_no_group(tiny_ham, frozen) -> None:
    """One empty ``group`` cell used to make the whole column ignored (every row grouped by its
    lesion), so a group declared across splits went through. Rows without a group are grouped
    by their lesion; the groups that are given are checked."""
    from dermlit.data.sources import HAM10000Source

    df = HAM10000Source(tiny_ham).load()[0]
    table = pd.read_csv(frozen, dtype=str, keep_default_na=False)
    a = table.loc[table.split == "train", "lesion_id"].iloc[0]
    b = table.loc[table.split == "test", "lesion_id"].iloc[0]
    blank = table.index[~table.lesion_id.isin([a, b])][-1]

    def join_and_blank(t):
        t.loc[t.lesion_id.isin([a, b]), "group"] = "G"
        t.loc[blank, "group"] = ""
        return t

    with pytest.raises(SplitFileError, match=r"1 \(G in test\+train\) group\(s\)"):
        apply_split_file(df, edit(frozen, join_and_blank))

    def only_blank(t):
        t.loc[blank, "group"] = ""
        return t

    out = apply_split_file(df, edit(frozen, only_blank))
    expected = table["group"].where(table.index != blank, table["lesion_id"])
    assert out["group"].tolist() == expected.tolist()


def test_dermlit_train_refuses_a_bad_split_file_in_one_line(
    tiny_ham, tmp_path, frozen, capsys
) -> None:
    """README's failure table: a frozen split file with a lesion across splits is refused with
    one line on stderr and exit status 2 (it was a ValueError: a traceback and exit 1). In
    process, through the entry point's Hydra callbacks (a subprocess cost 10 s of make test)."""
    from faults.fault_helpers import assert_refused, run_in_process

    from dermlit.train import main

    def leak(t):  # one image of a train lesion moved to test
        t.loc[t.index[t.split == "train"][0], "split"] = "test"
        return t

    bad = edit(frozen, leak)
    table = pd.read_csv(bad, dtype=str)
    spread = table.groupby("lesion_id")["split"].agg(lambda s: "+".join(sorted(set(s))))
    lesion = table.loc[table.index[table.split == "train"][0], "lesion_id"]
    args = [
        "data=ham10000",
        f"data.source.root={tiny_ham}",
        f"data.split_file={bad}",
        *OVERRIDES,
        "model.backbone.name=test_resnet",
        f"paths.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={tmp_path}/run",
        "logger=csv",
    ]
    status = run_in_process(main, "dermlit-train", *args)
    err = capsys.readouterr().err
    expected = f"1 ({lesion} in {spread[lesion]}) lesion_id(s) have images in two splits"
    assert_refused(status, err, "dermlit-train: ", expected)
    refusals = [line for line in err.strip().splitlines() if line.startswith("dermlit-train: ")]
    assert len(refusals) == 1 and expected in refusals[0], err[-3000:]


def test_a_frozen_split_that_separates_a_near_duplicate_is_warned_and_counted(
    tmp_path: Path, caplog
) -> None:
    """The file's checks know lesions and groups, not pixels: a lesion-only split file put an
    exact copy under another lesion id on the other side without a word."""
    import logging
    import shutil

    from dermlit.data.synthetic import generate_synthetic_dataset

    root = tmp_path / "syn"
    generate_synthetic_dataset(
        root, n_images=40, seed=3, width=200, height=150, max_images_per_lesion=1
    )
    meta = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str)
    original = meta[meta["dx"] == "nv"].iloc[0]
    shutil.copy(root / "images" / f"{original.image_id}.jpg", root / "images" / "SYN_COPY.jpg")
    copy = original.copy()
    copy["image_id"], copy["lesion_id"] = "SYN_COPY", "SYNL_COPY"
    pd.concat([meta, copy.to_frame().T]).to_csv(root / "HAM10000_metadata.csv", index=False)
    out = tmp_path / "lesion_only.csv"
    cache = f"paths.cache_dir={tmp_path}/c"
    args = ["data", "split", str(root), "--out", str(out), "-o", cache]
    assert dermlit_main([*args, "-o", "data.near_duplicates=null"]) == 0
    table = pd.read_csv(out, dtype=str)
    side = table.set_index("image_id")["split"]
    table.loc[table["image_id"] == "SYN_COPY", "split"] = next(
        s for s in ("train", "val", "test") if s != side[original.image_id]
    )
    table.to_csv(out, index=False)
    with caplog.at_level(logging.WARNING, logger="dermlit.data.datamodule"):
        data = datamodule(root, tmp_path / "c", f"data.split_file={out}")
    assert data.split_info["near_duplicate_pairs_across_splits"] == 1
    assert "puts 1 near-duplicate pair(s) on two sides" in caplog.text
    assert original.image_id in caplog.text and "SYN_COPY" in caplog.text
    # the split the same data= config writes keeps the two together: nothing to warn
    assert dermlit_main([*args[:4], str(tmp_path / "grouped.csv"), "-o", cache]) == 0
    kept = datamodule(root, tmp_path / "c", f"data.split_file={tmp_path / 'grouped.csv'}")
    assert kept.split_info["near_duplicate_pairs_across_splits"] == 0
