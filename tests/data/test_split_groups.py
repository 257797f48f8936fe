"""Splits grouped by lesion + near-duplicate links: nothing linked crosses, classes balanced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermlit.constants import CLASSES
from dermlit.data.sources import HAM10000Source
from dermlit.data.splits import SplitError, grouped_stratified_split, link_groups, split_table


def test_link_groups_by_hand() -> None:
    df = pd.DataFrame(
        {"image_id": list("abcdef"), "lesion_id": ["L3", "L3", "L1", "L2", "L4", "L5"]}
    )
    pairs = pd.DataFrame({"image_a": ["a", "d"], "image_b": ["c", "b"]})  # L3-L1, L2-L3
    groups = link_groups(df, pairs)
    assert groups.tolist() == ["L1", "L1", "L1", "L1", "L4", "L5"]
    assert link_groups(df, None).tolist() == df["lesion_id"].tolist()


def assert_within_tolerance(df: pd.DataFrame, split: pd.Series, group: pd.Series) -> None:
    """Each class's share of each split within one group's worth of the target (groups are
    indivisible: largest group of the class / images of the class), and within 1.5 points of
    the class's share of the whole set."""
    targets = {"train": 0.70, "val": 0.15, "test": 0.15}
    table = pd.crosstab(df["label"], split)
    share = table / table.to_numpy().sum(axis=1, keepdims=True)
    largest = df.groupby(["label", group]).size().groupby("label").max()
    one_group = largest / table.sum(axis=1)
    for name, fraction in targets.items():
        assert np.all(np.abs(share[name] - fraction) <= one_group + 1e-9), share
    overall = df["label"].value_counts(normalize=True)
    for name in targets:
        in_split = df.loc[split == name, "label"].value_counts(normalize=True)
        assert np.all(np.abs(in_split - overall).reindex(CLASSES) < 0.015)


@pytest.fixture(scope="module")
def ham_index(ham_dir: Path) -> pd.DataFrame:
    return HAM10000Source(ham_dir).load()[0]


def test_links_never_cross_on_real_metadata(ham_index: pd.DataFrame) -> None:
    """400 random cross-lesion links (same label, as real missing links are) over HAM10000:
    no lesion and no linked pair crosses splits; proportions stay within tolerance."""
    rng = np.random.default_rng(0)
    rows = []
    for _label, frame in ham_index.groupby("label"):
        n = max(2, int(400 * len(frame) / len(ham_index)))
        a, b = rng.integers(0, len(frame), (2, n))
        rows.append(
            pd.DataFrame(
                {"image_a": frame.image_id.iloc[a].values, "image_b": frame.image_id.iloc[b].values}
            )
        )
    pairs = pd.concat(rows, ignore_index=True)
    group = link_groups(ham_index, pairs)
    split = grouped_stratified_split(ham_index, 0.15, 0.15, seed=0, groups=group)
    where = dict(zip(ham_index.image_id, split, strict=True))
    assert all(where[a] == where[b] for a, b in zip(pairs.image_a, pairs.image_b, strict=True))
    assert split.groupby(ham_index["lesion_id"]).nunique().max() == 1
    assert split.groupby(group).nunique().max() == 1
    assert_within_tolerance(ham_index, split, group)
    table = split_table(ham_index.assign(split=split, group=group))
    assert table.columns.tolist() == ["image_id", "lesion_id", "label", "split", "group"]


@pytest.mark.slow
def test_detected_pairs_never_cross_in_the_default_ham10000_split(ham_dir: Path, tmp_path) -> None:
    """The ham10000 data config end to end: detection (minutes the first time, then cached
    under the repository's .cache), grouped split, nothing detected across splits."""
    from hydra.utils import instantiate

    from dermlit.data.cli import compose_data

    cfg = compose_data("ham10000", ham_dir, [])
    data = instantiate(cfg.data)
    data.setup()
    index, pairs = data.index, data.near_duplicate_pairs
    assert pairs is not None and len(pairs) > 0
    where = dict(zip(index.image_id, index.split, strict=True))
    assert all(where[a] == where[b] for a, b in zip(pairs.image_a, pairs.image_b, strict=True))
    assert index.groupby("lesion_id")["split"].nunique().max() == 1
    assert_within_tolerance(index, index["split"], index["group"])


@pytest.mark.slow  # ~45 s on the shared 2 cores (synthetic set, features, 300 verifications)
def test_datamodule_keeps_a_reacquired_copy_under_another_lesion_with_its_original(
    tmp_path: Path,
) -> None:
    """A copy filed under a new lesion id (a missing lesion link) lands in its original's split
    and group; without the detector the two are independent lesions."""
    from PIL import Image

    from dermlit.data.datamodule import DermDataModule
    from dermlit.data.image_features import read_working_image
    from dermlit.data.near_duplicates import NearDuplicateDetector
    from dermlit.data.reacquire import reacquire
    from dermlit.data.synthetic import generate_synthetic_dataset

    root = generate_synthetic_dataset(
        tmp_path / "syn", n_images=21, seed=4, width=200, height=150, max_images_per_lesion=1
    )
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    rng = np.random.default_rng(0)
    copies = []
    for k, row in meta.sample(4, random_state=0).reset_index(drop=True).iterrows():
        rgb, _ = reacquire(read_working_image(str(root / "images" / f"{row.image_id}.jpg"))[0], rng)
        Image.fromarray(rgb).save(root / "images" / f"COPY_{k}.jpg", quality=92)
        copies.append(
            {
                **row.to_dict(),
                "image_id": f"COPY_{k}",
                "lesion_id": f"NEW_{k}",
                "orig": row.image_id,
            }
        )
    pd.concat([meta, pd.DataFrame(copies).drop(columns="orig")]).to_csv(
        root / "HAM10000_metadata.csv", index=False
    )
    detector = NearDuplicateDetector(neighbours=30)  # every pair a candidate: a tiny set
    data = DermDataModule(
        HAM10000Source(root), image_size=16, cache_dir=tmp_path / "c", near_duplicates=detector
    )
    data.setup()
    index = data.index.set_index("image_id")
    found = {
        tuple(sorted(p))
        for p in zip(
            data.near_duplicate_pairs.image_a, data.near_duplicate_pairs.image_b, strict=True
        )
    }
    truth = {tuple(sorted((c["image_id"], c["orig"]))) for c in copies}
    assert len(found & truth) >= 3 and found <= truth
    for a, b in found:
        assert index.loc[a, "split"] == index.loc[b, "split"]
        assert index.loc[a, "group"] == index.loc[b, "group"]
    assert data.split_info["near_duplicate_pairs"] == len(found)
    assert (tmp_path / "c" / "near_duplicates").is_dir()  # cached for the next run
    plain = DermDataModule(HAM10000Source(root), image_size=16, cache_dir=tmp_path / "c")
    plain.setup()
    assert (plain.index["group"] == plain.index["lesion_id"]).all()


def mixed_patients(n_patients: int = 20, with_df: int = 6) -> pd.DataFrame:
    """Patients (the groups) with 3 nv images each; the first ``with_df`` also have one df
    image, so df is never a group's majority label."""
    rows = []
    for p in range(n_patients):
        rows += [(f"p{p}_nv{k}", f"P{p:02d}", "nv") for k in range(3)]
        if p < with_df:
            rows.append((f"p{p}_df", f"P{p:02d}", "df"))
    return pd.DataFrame(rows, columns=["image_id", "lesion_id", "label"])


@pytest.mark.parametrize("seed", range(8))
def test_a_class_that_is_no_groups_majority_is_in_every_split(seed: int) -> None:
    df = mixed_patients()
    split = grouped_stratified_split(df, 0.15, 0.15, seed=seed)
    table = pd.crosstab(df["label"], split).reindex(columns=["train", "val", "test"], fill_value=0)
    assert (table.to_numpy() > 0).all(), table
    assert split.groupby(df["lesion_id"]).nunique().max() == 1


def test_mixed_groups_through_the_datamodule(tmp_path: Path) -> None:
    """The reported case end to end: a CSV source grouped by patient."""
    from PIL import Image

    from dermlit.data.datamodule import DermDataModule
    from dermlit.data.sources import CSVSource

    df = mixed_patients()
    (tmp_path / "img").mkdir()
    for i in df["image_id"]:
        Image.new("RGB", (8, 8), (len(i) * 9 % 255, 80, 120)).save(tmp_path / "img" / f"{i}.png")
    labels = pd.DataFrame(
        {"path": "img/" + df["image_id"] + ".png", "patient": df["lesion_id"], "label": df["label"]}
    )
    labels.to_csv(tmp_path / "labels.csv", index=False)
    for seed in (0, 3, 4):
        data = DermDataModule(
            CSVSource(tmp_path, group_column="patient"),
            image_size=8,
            cache_dir=tmp_path / "cache",
            split_seed=seed,
        )
        data.setup("fit")
        table = pd.crosstab(data.index["label"], data.index["split"])
        assert (table.reindex(columns=["train", "val", "test"], fill_value=0) > 0).all().all()
        assert data.index.groupby("lesion_id")["split"].nunique().max() == 1


def test_too_few_groups_counts_groups_not_lesions() -> None:
    """3 df lesions, two linked by a near-duplicate pair: 2 groups, which the message counts
    (with the lesions they join) and whose remedy names the links."""
    rows = [(f"nv{i}", f"LN{i}", "nv") for i in range(30)]
    rows += [("d0", "LD0", "df"), ("d1", "LD1", "df"), ("d2", "LD2", "df")]
    df = pd.DataFrame(rows, columns=["image_id", "lesion_id", "label"])
    group = link_groups(df, pd.DataFrame({"image_a": ["d0"], "image_b": ["d1"]}))
    n_groups = group[df["label"] == "df"].nunique()
    n_lesions = df.loc[df["label"] == "df", "lesion_id"].nunique()
    with pytest.raises(SplitError) as error:
        grouped_stratified_split(df, 0.15, 0.15, seed=0, groups=group)
    message = str(error.value)
    assert "class 'df' has no image in the" in message
    assert (
        f"{n_lesions} lesion(s) that near-duplicate links or a group_column join into {n_groups} "
        "group(s)" in message
    )
    assert f"{n_groups} lesion(s)" not in message
    assert "data.near_duplicates" in message


def test_too_few_groups_without_links_explains_what_a_group_is() -> None:
    rows = [(f"L{i}", f"I{i}", "nv") for i in range(40)] + [("Ldf", "Idf", "df")]
    df = pd.DataFrame(rows, columns=["lesion_id", "image_id", "label"])
    with pytest.raises(SplitError, match=r"class 'df' has no image in the (val|test) split") as e:
        grouped_stratified_split(df, 0.15, 0.15, seed=0)
    assert "(1 image(s), 1 group(s))" in str(e.value)
    assert "group_column" in str(e.value)
