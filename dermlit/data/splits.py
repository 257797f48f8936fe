"""Grouped, class-stratified splits: no group in two splits, every class in every split.

A group is a lesion, or (:func:`link_groups`) the connected component of lesions joined by
near-duplicate images: ``lesion_id`` is incomplete, and two lesion ids whose images are
re-acquisitions of one lesion must stay on one side.

scikit-learn's ``StratifiedGroupKFold`` gives k equal folds, not arbitrary fractions such as
70/15/15, so we assign whole groups per class with a seeded shuffle instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dermlit.errors import InputError

SPLITS = ("train", "val", "test")


class SplitError(InputError):
    """A split cannot be made as configured (e.g. a class would be empty in a split)."""


def lesion_labels(df: pd.DataFrame, column: str = "lesion_id") -> pd.Series:
    """The label of each lesion (or group, ``column``): its most frequent image label (ties:
    first in class order)."""
    counts = df.groupby([column, "label"]).size().rename("n").reset_index()
    counts = counts.sort_values([column, "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates(column).set_index(column)["label"]


def link_groups(df: pd.DataFrame, pairs: pd.DataFrame | None) -> pd.Series:
    """A group id per row: the connected component of its lesion in the graph whose edges are
    the near-duplicate ``pairs`` (``image_a, image_b``). A group is named after its smallest
    lesion id, so an unlinked lesion's group is its lesion id."""
    lesions = df["lesion_id"].astype(str)
    if pairs is None or len(pairs) == 0:
        return lesions.rename("group")
    names = np.array(sorted(lesions.unique()))
    code = {name: i for i, name in enumerate(names)}
    lesion_of = dict(zip(df["image_id"].astype(str), lesions, strict=True))
    known = pairs["image_a"].isin(lesion_of) & pairs["image_b"].isin(lesion_of)
    a = [code[lesion_of[i]] for i in pairs.loc[known, "image_a"]]
    b = [code[lesion_of[i]] for i in pairs.loc[known, "image_b"]]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, component = connected_components(graph, directed=False)
    first = pd.Series(names).groupby(component).transform("min").to_numpy()
    return lesions.map(dict(zip(names, first, strict=True))).rename("group")


def grouped_stratified_split(
    df: pd.DataFrame,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    groups: pd.Series | None = None,
) -> pd.Series:
    """A ``split`` value (train/val/test) per row of ``df``; ``groups`` (default: the lesion
    ids) is the unit kept on one side.

    Per class, groups are shuffled (seeded) and assigned in order so that the cumulative share
    of that class's *images* reaches the train, val and test fractions. Raises
    :class:`SplitError` naming the class and split when a split would get no image of a class.
    """
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SplitError(f"bad split fractions: val={val_fraction}, test={test_fraction}")
    bounds = np.array([1 - val_fraction - test_fraction, 1 - test_fraction])
    return assign_groups(df, bounds, SPLITS, seed, groups)


def assign_groups(
    df: pd.DataFrame,
    bounds: np.ndarray,
    names: tuple[str, ...],
    seed: int = 0,
    groups: pd.Series | None = None,
) -> pd.Series:
    """The split of each row among ``names``: per class, whole groups in a seeded order, the
    cumulative image share of that class cut at ``bounds`` (``len(names) - 1`` increasing
    fractions). Every class gets >= 1 group in every split (:class:`SplitError` otherwise)."""
    rng = np.random.default_rng(seed)
    key = df["lesion_id"] if groups is None else groups
    lesion_ids = df["lesion_id"] if "lesion_id" in df.columns else key
    df = pd.DataFrame(
        {
            "lesion_id": key.to_numpy(),
            "label": df["label"].to_numpy(),
            "lesion": lesion_ids.to_numpy(),  # only for the error message's count
        },
        df.index,
    )
    per_lesion = df.groupby("lesion_id").size()
    labels = lesion_labels(df)
    assignment: dict[str, str] = {}
    for label in sorted(labels.unique()):
        lesions = labels.index[labels == label].to_numpy()
        lesions = lesions[rng.permutation(len(lesions))]
        sizes = per_lesion.loc[lesions].to_numpy()
        # midpoint of each lesion's block of images decides its split
        mid = (np.cumsum(sizes) - sizes / 2) / sizes.sum()
        which = np.searchsorted(bounds, mid, side="right")
        which = _fill_empty_splits(which, sizes, names)
        assignment.update(zip(lesions, (names[i] for i in which), strict=True))
    _cover_every_class(df, assignment, names)
    return df["lesion_id"].map(assignment).rename("split")


def _fill_empty_splits(
    which: np.ndarray, sizes: np.ndarray, names: tuple[str, ...] = SPLITS
) -> np.ndarray:
    """A rare class with few lesions can miss a split by rounding: move into each empty split
    the smallest lesion of the split that has the most lesions (the class keeps >= 1 per split).
    A split left empty here (too few groups) is :func:`_cover_every_class`'s to fill or refuse."""
    which = which.copy()
    for empty in range(len(names)):
        if np.any(which == empty):
            continue
        donor = np.bincount(which, minlength=len(names)).argmax()
        candidates = np.flatnonzero(which == donor)
        if len(candidates) >= 2:
            which[candidates[np.argmin(sizes[candidates])]] = empty
    return which


def _cover_every_class(
    df: pd.DataFrame, assignment: dict[str, str], names: tuple[str, ...]
) -> None:
    """Groups are stratified by their majority label, so a class that is never a majority (df
    images of patients who mostly have nv) lands anywhere. For each split that lacks a class,
    move there the smallest group containing it from the split with the most such groups,
    if that split keeps every class of the moved group (so no earlier fix is undone).
    Changes nothing where every class is already in every split."""
    present = pd.crosstab(df["lesion_id"], df["label"]) > 0  # group x class
    where = pd.Series(assignment).reindex(present.index)
    counts = present.groupby(where).sum().reindex(list(names), fill_value=0)  # split x class
    if (counts.to_numpy() > 0).all():
        return
    size = df.groupby("lesion_id").size().reindex(present.index)
    order = {name: i for i, name in enumerate(names)}
    for label in sorted(present.columns):
        for target in names:
            if counts.at[target, label] > 0:
                continue
            move = None
            holders = present.index[present[label].to_numpy() & (where != target).to_numpy()]
            ranked = sorted(
                holders,
                key=lambda g: (-counts.at[where[g], label], order[where[g]], size[g], str(g)),
            )
            for group in ranked:
                classes = present.columns[present.loc[group].to_numpy()]
                if (counts.loc[where[group], classes] >= 2).all():
                    move = group
                    break
            if move is None:
                raise SplitError(_missing_class_message(df, label, target, names))
            classes = present.columns[present.loc[move].to_numpy()]
            counts.loc[where[move], classes] -= 1
            counts.loc[target, classes] += 1
            where[move] = target
            assignment[move] = target


def _missing_class_message(df: pd.DataFrame, label: str, split: str, names: tuple[str, ...]) -> str:
    """Why ``label`` cannot be in ``split``, counting what a split keeps together: groups."""
    of_class = df[df["label"] == label]
    n_groups, n_lesions = of_class["lesion_id"].nunique(), of_class["lesion"].nunique()
    linked = n_lesions > n_groups
    said = f"class {label!r} has no image in the {split} split ({len(of_class)} image(s), "
    if linked:
        said += f"{n_lesions} lesion(s) that near-duplicate links or a group_column join into "
    said += f"{n_groups} group(s)): "
    if n_groups >= len(names):
        return said + (
            "no group containing it can move there without taking the last group of another "
            f"class from its split; use more data of {label!r}"
        )
    said += (
        f"a group never crosses splits, so a class needs images in at least {len(names)} "
        f"groups; use more data of {label!r}"
    )
    if linked:
        return said + " or check what joins them (data.near_duplicates, group_column)"
    return said + (
        " (a group is a lesion, or lesions joined by near-duplicate links "
        "(data.near_duplicates) or by the source's group_column)"
    )


class GroupedSplit:
    """The in-domain split (the default): every source on every side, whole groups per class
    (:func:`grouped_stratified_split`). The interface of every split option
    (``conf/data/split/``; ``source_split.SourceHoldout``): called with the index table, the
    group of each row, the source's ``source_column`` and its description, it returns the
    split of each row and what ``split.json`` records."""

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0):
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed

    def __call__(
        self, df: pd.DataFrame, groups: pd.Series, source_column: str | None, dataset: str
    ) -> tuple[pd.Series, dict]:
        split = grouped_stratified_split(
            df, self.val_fraction, self.test_fraction, self.seed, groups=groups
        )
        return split, {"split": "grouped", "seed": self.seed}


def split_table(df: pd.DataFrame) -> pd.DataFrame:
    """The ``splits.csv`` content: one row per image with its lesion, label, split and group
    (the unit the split kept on one side; the lesion id when no group column is there)."""
    out = df[["image_id", "lesion_id", "label", "split"]].copy()
    out["group"] = df["group"] if "group" in df.columns else df["lesion_id"]
    return out


def crossing_pairs(df: pd.DataFrame, split: pd.Series, pairs: pd.DataFrame) -> pd.DataFrame:
    """The ``pairs`` (``image_a, image_b``) whose two images ``split`` puts on different sides."""
    where = dict(zip(df["image_id"].astype(str), split, strict=True))
    a, b = pairs["image_a"].map(where), pairs["image_b"].map(where)
    return pairs[a.notna() & b.notna() & (a != b)]
