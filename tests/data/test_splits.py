import numpy as np
import pandas as pd
import pytest

from dermlit.constants import CLASSES
from dermlit.data.sources import HAM10000Source
from dermlit.data.splits import SplitError, grouped_stratified_split


@pytest.fixture(scope="module")
def ham_index(ham_dir) -> pd.DataFrame:
    return HAM10000Source(ham_dir).load()[0]


def test_no_lesion_in_two_splits_on_real_metadata(ham_index: pd.DataFrame) -> None:
    split = grouped_stratified_split(ham_index, 0.15, 0.15, seed=0)
    per_lesion = split.groupby(ham_index["lesion_id"]).nunique()
    assert per_lesion.max() == 1
    assert set(split) == {"train", "val", "test"}


def test_class_proportions_within_tolerance_on_real_metadata(ham_index: pd.DataFrame) -> None:
    """Tolerance: lesions are indivisible, so each class's share of each split must be within
    one lesion's worth of the target (largest lesion of the class / images of the class; about
    3 points for df's 115 images), and each class's share of a split within 1 point of its
    share of the whole set."""
    split = grouped_stratified_split(ham_index, 0.15, 0.15, seed=0)
    targets = {"train": 0.70, "val": 0.15, "test": 0.15}
    table = pd.crosstab(ham_index["label"], split)
    share_of_class = table / table.to_numpy().sum(axis=1, keepdims=True)
    sizes = ham_index.groupby(["label", "lesion_id"]).size().groupby("label").max()
    one_lesion = sizes / table.sum(axis=1)
    for name, fraction in targets.items():
        assert np.all(np.abs(share_of_class[name] - fraction) <= one_lesion), share_of_class
    overall = ham_index["label"].value_counts(normalize=True)
    for name in targets:
        in_split = ham_index.loc[split == name, "label"].value_counts(normalize=True)
        assert np.all(np.abs(in_split - overall).reindex(CLASSES) < 0.01)


def test_split_is_seeded(ham_index: pd.DataFrame) -> None:
    a = grouped_stratified_split(ham_index, seed=1)
    b = grouped_stratified_split(ham_index, seed=1)
    c = grouped_stratified_split(ham_index, seed=2)
    assert a.equals(b)
    assert not a.equals(c)


def test_empty_class_in_a_split_names_class_and_split() -> None:
    rows = [(f"L{i}", f"I{i}", "nv") for i in range(40)] + [("Ldf", "Idf", "df")]
    df = pd.DataFrame(rows, columns=["lesion_id", "image_id", "label"])
    with pytest.raises(SplitError, match=r"class 'df' has no image in the (train|val|test) split"):
        grouped_stratified_split(df, 0.15, 0.15, seed=0)
