"""The synthetic HAM10000-layout dataset: layout, exact class counts, lesion grouping,
determinism, idempotence, and that its classes are learnable but not trivially so."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dermlit.constants import CLASSES, HAM10000_CLASS_COUNTS
from dermlit.data.synthetic import (
    MANIFEST_NAME,
    METADATA_NAME,
    allocate_class_counts,
    generate_synthetic_dataset,
    render_lesion,
    sample_lesion,
)

SMALL = {"akiec": 2, "bcc": 2, "bkl": 3, "df": 1, "mel": 3, "nv": 12, "vasc": 1}


def read_rows(root: Path) -> list[dict[str, str]]:
    with open(root / METADATA_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def decoded(root: Path, rows) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.open(root / "images" / f"{r['image_id']}.jpg")) for r in rows]
    )


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_images=60, seed=3,
                                      width=64, height=48, class_counts=SMALL)  # fmt: skip


def test_allocation_hand_worked_ham_proportions():
    # 2000 * count / 10015: akiec 65.30 bcc 102.65 bkl 219.47 df 22.97 mel 222.27 nv 1338.99
    # vasc 28.36 -> floors sum to 1996; the 4 largest remainders (nv, df, bcc, bkl) get +1.
    expected = {"akiec": 65, "bcc": 103, "bkl": 220, "df": 23, "mel": 222, "nv": 1339, "vasc": 28}
    assert allocate_class_counts(2000, HAM10000_CLASS_COUNTS) == expected


def test_allocation_ties_minimum_and_missing_classes():
    # 7/3 each: one image left over goes to the first class in CLASSES order on a tie.
    assert allocate_class_counts(7, {"vasc": 1, "bcc": 1, "akiec": 1}, min_per_class=1) == {
        "akiec": 3, "bcc": 2, "bkl": 0, "df": 0, "mel": 0, "nv": 0, "vasc": 2}  # fmt: skip
    # quotas nv 5, mel 3, df 2: df is lifted to the minimum 3 by taking from the largest (nv).
    got = allocate_class_counts(10, {"nv": 5, "mel": 3, "df": 2}, min_per_class=3)
    assert (got["nv"], got["mel"], got["df"], sum(got.values())) == (4, 3, 3, 10)


@pytest.mark.parametrize(
    ("n", "counts", "message"),
    [
        (0, HAM10000_CLASS_COUNTS, "positive integer"),
        (100.0, HAM10000_CLASS_COUNTS, "positive integer"),
        (100, {"melanoma": 3}, "unknown class"),
        (100, {"nv": -1, "mel": 2}, "non-negative integers"),
        (100, {"nv": 0}, "at least one class"),
        (20, HAM10000_CLASS_COUNTS, "too small"),
    ],
)
def test_allocation_rejects_bad_input(n, counts, message):
    with pytest.raises(ValueError, match=message):
        allocate_class_counts(n, counts)


def test_layout_counts_and_lesion_grouping(small_set):
    with open(small_set / METADATA_NAME, newline="") as fh:
        assert next(csv.reader(fh)) == [
            "lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"
        ]  # fmt: skip
    rows = read_rows(small_set)
    assert Counter(r["dx"] for r in rows) == {
        c: n for c, n in allocate_class_counts(60, SMALL).items() if n}  # fmt: skip
    files = sorted(p.name for p in (small_set / "images").iterdir())
    assert files == sorted(f"{r['image_id']}.jpg" for r in rows)
    assert all(
        r["image_id"].startswith("SYN_") and r["lesion_id"].startswith("SYNL_") for r in rows
    )
    assert Image.open(small_set / "images" / files[0]).size == (64, 48)
    by_lesion = defaultdict(list)
    for r in rows:
        by_lesion[r["lesion_id"]].append(r)
    sizes = Counter(len(v) for v in by_lesion.values())
    assert max(sizes) <= 3 and sizes[1] > 0 and any(k > 1 for k in sizes)
    # two fake sources, one per lesion (a lesion never spans sources)
    assert {r["dataset"] for r in rows} == {"synth_a", "synth_b"}
    assert all(len({r["dataset"] for r in v}) == 1 for v in by_lesion.values())
    for imgs in by_lesion.values():  # one diagnosis and one patient per lesion
        assert len({(r["dx"], r["age"], r["sex"], r["localization"]) for r in imgs}) == 1
    assert {r["dx_type"] for r in rows} == {"synthetic"}
    assert all(20 <= float(r["age"]) <= 85 for r in rows)


def test_repeat_images_resemble_their_lesion(small_set):
    """A lesion's repeat images differ (new view) but less than images of other lesions do."""
    rows = read_rows(small_set)
    px = decoded(small_set, rows).astype(np.float32)
    lesion = np.array([r["lesion_id"] for r in rows])
    same, other = [], []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            (same if lesion[i] == lesion[j] else other).append(np.abs(px[i] - px[j]).mean())
    assert min(same) > 0
    assert np.mean(same) < 0.8 * np.mean(other)


def test_deterministic_per_seed(tmp_path, small_set):
    again = generate_synthetic_dataset(tmp_path / "a", n_images=60, seed=3, width=64, height=48,
                                       class_counts=SMALL)  # fmt: skip
    assert (again / METADATA_NAME).read_bytes() == (small_set / METADATA_NAME).read_bytes()
    rows = read_rows(again)
    np.testing.assert_array_equal(decoded(again, rows), decoded(small_set, rows))
    other = generate_synthetic_dataset(tmp_path / "b", n_images=60, seed=4, width=64, height=48,
                                       class_counts=SMALL)  # fmt: skip
    assert (other / METADATA_NAME).read_bytes() != (small_set / METADATA_NAME).read_bytes()


def test_idempotent_then_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "cache"
    assert generate_synthetic_dataset(root, n_images=40, seed=0, width=32, height=24) == root
    files = [p for p in root.rglob("*") if p.is_file()]
    for p in files:  # an old, fixed mtime: any rewrite would change it
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    generate_synthetic_dataset(root, n_images=40, seed=0, width=32, height=24)
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in files)

    generate_synthetic_dataset(root, n_images=30, seed=1, width=32, height=24)
    rows = read_rows(root)
    assert len(rows) == 30
    assert sorted(p.stem for p in (root / "images").iterdir()) == sorted(
        r["image_id"] for r in rows
    )
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert (manifest["n_images"], manifest["seed"]) == (30, 1)


def test_refuses_to_overwrite_real_data_and_bad_parameters(tmp_path):
    (tmp_path / METADATA_NAME).write_text(
        "lesion_id,image_id,dx,dx_type,age,sex,localization\n"
        "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp\n"
    )
    with pytest.raises(ValueError, match="not synthetic"):
        generate_synthetic_dataset(tmp_path, n_images=30)
    with pytest.raises(ValueError, match="width and height"):
        generate_synthetic_dataset(tmp_path / "x", width=8)
    with pytest.raises(ValueError, match="max_images_per_lesion"):
        generate_synthetic_dataset(tmp_path / "x", max_images_per_lesion=0)
    with pytest.raises(ValueError, match="jpeg_quality"):
        generate_synthetic_dataset(tmp_path / "x", jpeg_quality=0)


def test_render_lesion_any_size_and_unknown_diagnosis():
    lesion = sample_lesion("mel", np.random.default_rng(0))
    pixels = render_lesion(lesion, np.random.default_rng(1), width=40, height=30)
    assert pixels.shape == (30, 40, 3) and pixels.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown diagnosis 'melanoma'"):
        sample_lesion("melanoma", np.random.default_rng(0))


def test_classes_learnable_from_colour_statistics_but_not_trivially(tmp_path):
    """Mean/std colour of the centre and of the surrounding ring, per image, fed to a linear
    model: clearly better than always predicting nv, far from perfect."""
    root = generate_synthetic_dataset(tmp_path, n_images=900, seed=11, width=64, height=48)
    rows = read_rows(root)
    px = decoded(root, rows).astype(np.float32) / 255
    yy, xx = np.mgrid[:48, :64]
    r = np.hypot(xx + 0.5 - 32, yy + 0.5 - 24) / 24
    centre, ring = px[:, r < 0.4], px[:, (r > 0.7) & (r < 1.0)]
    feats = np.concatenate([centre.mean(1), ring.mean(1), centre.std(1), ring.std(1)], axis=1)
    y = np.array([CLASSES.index(r["dx"]) for r in rows])
    groups = [r["lesion_id"] for r in rows]
    train, test = next(GroupShuffleSplit(1, test_size=0.3, random_state=0).split(feats, y, groups))
    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
    )
    pred = model.fit(feats[train], y[train]).predict(feats[test])
    macro = f1_score(y[test], pred, average="macro", labels=range(len(CLASSES)))
    always_nv = np.full_like(y[test], CLASSES.index("nv"))
    baseline = f1_score(y[test], always_nv, average="macro", labels=range(len(CLASSES)))
    assert macro > 2 * baseline, (macro, baseline)
    assert macro < 0.98, macro
