"""``dermlit data overlap`` between two folders, the eval-time warning, and the image faults."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.cli import main as dermlit_main
from dermlit.data.image_faults import BLURRED, DARK, NEAR_UNIFORM, ODD_ASPECT, image_faults
from dermlit.data.image_features import extract_features, read_working_image
from dermlit.data.near_duplicates import NearDuplicateDetector
from dermlit.data.overlap import find_overlap, warn_training_overlap
from dermlit.data.reacquire import reacquire
from dermlit.data.sources import FolderSource, HAM10000Source
from dermlit.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A: 12 synthetic images. B: 2 byte copies of A's, 2 re-acquired copies of others, and 8
    images A does not have."""
    root = tmp_path_factory.mktemp("overlap")
    generate_synthetic_dataset(
        root / "syn", n_images=21, seed=5, width=200, height=150, max_images_per_lesion=1
    )
    images = sorted((root / "syn" / "images").glob("*.jpg"))
    a, b = root / "A", root / "B"
    a.mkdir(), b.mkdir()
    for p in images[:12]:
        shutil.copy(p, a / p.name)
    for p in images[12:20]:
        shutil.copy(p, b / f"other_{p.name}")
    shutil.copy(images[0], b / "copy0.jpg")
    shutil.copy(images[1], b / "copy1.jpg")
    rng = np.random.default_rng(0)
    for i in (2, 3):
        rgb, _ = reacquire(read_working_image(str(images[i]))[0], rng)
        Image.fromarray(rgb).save(b / f"reacq{i}.png")
    truth = {
        ("exact", images[0].stem, "copy0"),
        ("exact", images[1].stem, "copy1"),
        ("near", images[2].stem, "reacq2"),
        ("near", images[3].stem, "reacq3"),
    }
    return a, b, truth


def test_overlap_finds_exact_and_near_copies_only(two_folders) -> None:
    a, b, truth = two_folders
    da, db = FolderSource(a).load()[0], FolderSource(b).load()[0]
    found = find_overlap(da, db, NearDuplicateDetector(threshold=0.7, neighbours=8))
    assert set(zip(found.match, found.image_a, found.image_b, strict=True)) == truth
    exact_only = find_overlap(da, db, None)
    assert set(exact_only.match) == {"exact"} and len(exact_only) == 2


def test_overlap_cli(two_folders, tmp_path, capsys) -> None:
    a, b, _ = two_folders
    out = tmp_path / "pairs.csv"
    assert dermlit_main(["data", "overlap", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shared: 2 exact" in printed
    assert len(pd.read_csv(out)) >= 2
    assert dermlit_main(["data", "overlap", str(a), str(tmp_path / "none")]) == 2
    assert "overlap failed" in capsys.readouterr().out


def test_eval_warning_names_count_and_ids(two_folders, tmp_path, caplog) -> None:
    a, b, _ = two_folders
    train = FolderSource(a, split="train").load()[0]
    run_data = SimpleNamespace(
        frame=lambda split: train, near_duplicates=None, cache_dir=str(tmp_path)
    )
    evaluated = FolderSource(b).load()[0]
    data = SimpleNamespace(frame=lambda split: evaluated)
    with caplog.at_level(logging.WARNING):
        found = warn_training_overlap(run_data, data, "test")
    assert len(found) == 2
    assert "2 evaluated image(s) overlap the run's training images (2 exact" in caplog.text
    assert "copy0~" in caplog.text


# --------------------------------------------------------------------------- image faults
def textured(rng, h=150, w=200) -> np.ndarray:
    """Skin-like noise at several scales with a dark blob: a sharp, normal image."""
    base = rng.normal(0, 1, (h, w)).astype(np.float32)
    img = 170 + 25 * cv2.GaussianBlur(base, (0, 0), 1.0) + 20 * cv2.GaussianBlur(base, (0, 0), 6)
    yy, xx = np.mgrid[:h, :w]
    img -= 80 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * 30**2))
    return np.clip(np.stack([img, img * 0.8, img * 0.7], -1), 0, 255).astype(np.uint8)


def test_each_constructed_fault_is_found_and_nothing_else(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = textured(rng)
    images = {
        "normal": normal,
        "blank": np.full((150, 200, 3), 128, np.uint8),
        "blurred": cv2.GaussianBlur(normal, (0, 0), 5),
        "dark": (normal * 0.12).astype(np.uint8),
        "wide": textured(rng, 100, 300),
    }
    paths = []
    for name, img in images.items():
        Image.fromarray(img).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    feats = extract_features(paths)
    faults = image_faults(list(images), feats.stats)
    got = set(zip(faults.image_id, faults.fault, strict=True))
    # a blank image is also blurred (no edges), and so is a very dark one (the Laplacian is
    # absolute: HAM10000 separates best so, README); the blurred copy is nothing else
    assert got == {
        ("blank", NEAR_UNIFORM),
        ("blank", BLURRED),
        ("blurred", BLURRED),
        ("dark", DARK),
        ("dark", BLURRED),
        ("wide", ODD_ASPECT),
    }


def test_real_images_are_not_faulty_but_their_blurred_copies_are(ham_dir: Path, tmp_path) -> None:
    df = HAM10000Source(ham_dir).load()[0].sample(30, random_state=0)
    paths = []
    for path in df["path"]:
        rgb = read_working_image(path)[0]
        out = tmp_path / f"{Path(path).stem}_blur.png"
        Image.fromarray(cv2.GaussianBlur(rgb, (0, 0), 4)).save(out)
        paths.append(str(out))
    feats = extract_features(df["path"].tolist() + paths)
    ids = df["image_id"].tolist() + [Path(p).stem for p in paths]
    faults = image_faults(ids, feats.stats)
    assert set(faults.loc[faults.fault == BLURRED, "image_id"]) == {Path(p).stem for p in paths}
    assert not faults.image_id.isin(df["image_id"]).any()
