"""`dermlit data check`: every planted problem is found under its name, exit codes follow."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dermlit.cli import main as dermlit_main
from dermlit.data import check
from dermlit.data.sources import HAM10000Source
from dermlit.data.validation import check_index
from tests.conftest import write_tiny_ham

META = "HAM10000_metadata.csv"


def image(root: Path, image_id: str) -> Path:
    return root / "images" / f"{image_id}.jpg"


def test_clean_set_passes_with_exact_summary(tiny_ham: Path, capsys) -> None:
    result = check.check_source(HAM10000Source(tiny_ham), workers=2)
    assert result.ok and not result.warnings.problems and result.identical_groups == []
    meta = pd.read_csv(tiny_ham / META)
    tables = check.summaries(result.index)
    per_class = tables["Images per class"].set_index("class")
    assert per_class["images"].to_dict() == meta["dx"].value_counts().to_dict()
    assert per_class["lesions"].to_dict() == meta.groupby("dx")["lesion_id"].nunique().to_dict()
    # 7 classes x 4 lesions, 2 images each
    assert tables["Images per lesion"].values.tolist() == [["2", 28]]
    assert tables["Image sizes (WxH)"].values.tolist() == [["40x30", 56]]
    assert dermlit_main(["data", "check", str(tiny_ham), "--workers", "2"]) == 0
    assert "OK: no errors" in capsys.readouterr().out


def test_identical_pair_within_a_lesion_is_only_a_warning(tiny_ham: Path, capsys) -> None:
    shutil.copyfile(image(tiny_ham, "IMG_10000"), image(tiny_ham, "IMG_10001"))  # same lesion
    result = check.check_source(HAM10000Source(tiny_ham), workers=2)
    assert result.ok
    assert result.identical_groups == [["IMG_10000", "IMG_10001"]]
    assert result.warnings.problems == {
        check.IDENTICAL_SAME_LESION: [("IMG_10000", "identical to IMG_10001")]
    }
    assert dermlit_main(["data", "check", str(tiny_ham)]) == 0
    out = capsys.readouterr().out
    assert "Warnings" in out and "IMG_10000" in out and "OK: no errors" in out


def plant(root: Path) -> dict[str, tuple[str, str]]:
    """Plant one of each problem; returns {problem kind: (reported id, detail fragment)}."""
    meta = pd.read_csv(root / META)
    image(root, "IMG_00000").unlink()
    data = image(root, "IMG_10010").read_bytes()
    image(root, "IMG_10010").write_bytes(data[:200])
    meta.loc[meta["image_id"] == "IMG_20000", "dx"] = "scc"
    # lesion L3001 gets two labels; df -> mel stays a known label
    meta.loc[meta["image_id"] == "IMG_30011", "dx"] = "mel"
    # same bytes in two lesions of one class (leak), and in two classes (label noise)
    shutil.copyfile(image(root, "IMG_40000"), image(root, "IMG_40010"))
    shutil.copyfile(image(root, "IMG_50000"), image(root, "IMG_60000"))
    meta = pd.concat([meta, meta[meta["image_id"] == "IMG_50020"]])
    meta.to_csv(root / META, index=False)
    return {
        "missing image file": ("IMG_00000", "IMG_00000.jpg"),
        check.CORRUPT: ("IMG_10010", "Error"),
        "unknown label": ("IMG_20000", "'scc'"),
        check.CONFLICTING_LESION: ("L3001", "labels df, mel"),
        check.IDENTICAL_ACROSS_LESIONS: ("IMG_40000", "IMG_40000 in L4000, IMG_40010 in L4001"),
        check.IDENTICAL_LABELS_DIFFER: ("IMG_50000", "IMG_50000=nv, IMG_60000=vasc"),
        "duplicate image_id": ("IMG_50020", ""),
    }


def test_each_planted_problem_is_reported(tiny_ham: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # rich would wrap the problem names at 80
    planted = plant(tiny_ham)
    result = check.check_source(HAM10000Source(tiny_ham), workers=2)
    assert not result.ok
    assert set(result.errors.problems) == set(planted)
    for kind, (image_id, fragment) in planted.items():
        rows = result.errors.problems[kind]
        assert [i for i, _ in rows] == [image_id], kind
        assert fragment in rows[0][1], (kind, rows)
    assert dermlit_main(["data", "check", str(tiny_ham)]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 7 error(s)" in out
    for kind in planted:
        assert kind in out


def test_identical_files_name_each_id_with_its_own_label_and_lesion(tiny_ham: Path) -> None:
    """The first id (sorted) is also listed twice: the details still pair each id with its own
    label (IMG_00000 akiec, IMG_60000 vasc) and lesion (IMG_40000 in L4000, IMG_40010 in L4001)."""
    meta = pd.read_csv(tiny_ham / META)
    shutil.copyfile(image(tiny_ham, "IMG_00000"), image(tiny_ham, "IMG_60000"))  # two classes
    shutil.copyfile(image(tiny_ham, "IMG_40000"), image(tiny_ham, "IMG_40010"))  # two lesions
    twice = meta[meta["image_id"].isin(["IMG_00000", "IMG_40000"])]
    pd.concat([meta, twice]).to_csv(tiny_ham / META, index=False)
    result = check.check_source(HAM10000Source(tiny_ham), workers=2)
    assert result.errors.problems[check.IDENTICAL_LABELS_DIFFER] == [
        ("IMG_00000", "IMG_00000=akiec, IMG_60000=vasc")
    ]
    assert result.errors.problems[check.IDENTICAL_ACROSS_LESIONS] == [
        ("IMG_40000", "IMG_40000 in L4000, IMG_40010 in L4001")
    ]
    assert sorted(result.identical_groups) == [
        ["IMG_00000", "IMG_60000"],
        ["IMG_40000", "IMG_40010"],
    ]
    assert [i for i, _ in result.errors.problems["duplicate image_id"]] == [
        "IMG_00000",
        "IMG_40000",
    ]


def test_unreadable_dataset_exits_2(tmp_path: Path, capsys) -> None:
    assert dermlit_main(["data", "check", str(tmp_path)]) == 2
    assert "HAM10000 metadata not found" in capsys.readouterr().out


def test_other_sources_by_config_name(tmp_path: Path) -> None:
    root = write_tiny_ham(tmp_path / "own", lesions_per_class=1, images_per_lesion=1)
    meta = pd.read_csv(root / META)
    rows = {"file": "images/" + meta["image_id"] + ".jpg", "dx": meta["dx"].str.upper()}
    pd.DataFrame(rows).to_csv(root / "mine.csv", index=False)
    argv = ["data", "check", str(root), "--source", "csv", "-o", "csv=mine.csv"]
    assert dermlit_main([*argv, "-o", "path_column=file", "-o", "label_column=dx"]) == 0
    with pytest.raises(SystemExit, match="unknown --source 'nope'"):
        dermlit_main(["data", "check", str(root), "--source", "nope"])


class Subset:
    """The real HAM10000 restricted to some lesions (keeps this test fast)."""

    def __init__(self, root: Path, lesions: set[str]) -> None:
        self.inner, self.lesions = HAM10000Source(root), lesions

    def load(self):
        df, _ = self.inner.load()
        df = df[df["lesion_id"].isin(self.lesions)].reset_index(drop=True)
        return df, check_index(df, "ham10000 subset")


KNOWN_PAIRS = [["ISIC_0024366", "ISIC_0029861"], ["ISIC_0024777", "ISIC_0029938"]]


def test_real_ham10000_known_identical_pairs(ham_dir: Path) -> None:
    meta = pd.read_csv(ham_dir / META)
    pair_lesions = set(meta.loc[meta["image_id"].isin(sum(KNOWN_PAIRS, [])), "lesion_id"])
    others = set(meta["lesion_id"].drop_duplicates().sample(150, random_state=0))
    result = check.check_source(Subset(ham_dir, pair_lesions | others), workers=2)
    assert result.ok, result.errors.message()
    assert sorted(result.identical_groups) == KNOWN_PAIRS
    assert [i for i, _ in result.warnings.problems[check.IDENTICAL_SAME_LESION]] == [
        "ISIC_0024366",
        "ISIC_0024777",
    ]


@pytest.mark.slow
def test_real_ham10000_full_check(ham_dir: Path) -> None:
    result = check.check_source(HAM10000Source(ham_dir))
    assert result.ok and sorted(result.identical_groups) == KNOWN_PAIRS
    assert len(result.index) == 10015
