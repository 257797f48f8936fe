"""benchmarks/saliency_in_lesion.py end to end on a tiny HAM10000-layout run: it scores the run's
TEST images that have a mask, and it reads those masks in the model input's geometry. Masks
that cover the whole image put all of every map's mass, the blob's and the area inside the
lesion (1.000); empty masks put none there (0.000), whatever the model learned."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_ham
from PIL import Image

from dermlit.explain.lesion_overlap import mask_path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "saliency_in_lesion.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory, trained_run):
    root = tmp_path_factory.mktemp("saliency")
    ham = write_tiny_ham(root / "ham", lesions_per_class=4)
    run_dir = root / "run"
    overrides = [
        "data=ham10000",
        f"data.source.root={ham}",
        "data.image_size=32",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "bootstrap_resamples=20",
    ]
    with trained_run(run_dir, *overrides):
        yield run_dir, ham


def benchmark(run_dir: Path, ham: Path, masks: Path, out: Path, capsys) -> str:
    argv = [str(SCRIPT), str(run_dir), "--masks", str(masks), "--images", str(ham / "images")]
    argv += ["--out", str(out), "--threads", "1"]
    old = sys.argv
    sys.argv = argv
    try:
        capsys.readouterr()
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = old
    return capsys.readouterr().out


def write_masks(folder: Path, ids: list[str], value: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in ids:
        Image.fromarray(np.full((30, 40), value, np.uint8)).save(mask_path(folder, i))


@pytest.mark.parametrize(("value", "inside"), [(255, "1.000"), (0, "0.000")])
def test_masks_decide_the_share_inside_the_lesion(run, tmp_path, capsys, value, inside):
    run_dir, ham = run
    splits = pd.read_csv(run_dir / "splits.csv")
    test_ids = splits.loc[splits["split"] == "test", "image_id"].tolist()
    others = splits.loc[splits["split"] != "test", "image_id"].tolist()
    with_mask = test_ids[::2]  # half the test images; masks of other splits are ignored
    write_masks(tmp_path / "masks", [*with_mask, *others], value)
    out = benchmark(run_dir, ham, tmp_path / "masks", tmp_path / "fig.png", capsys)
    assert f"{len(with_mask)} test images with masks, 32 px" in out
    shares = re.search(
        r"inside the lesion (\S+), centred blob (\S+), lesion area (\S+); lift (\S+)", out
    )
    assert shares is not None, out
    assert shares.groups() == (inside, inside, inside, "+0.000"), out
    assert (tmp_path / "fig.png").stat().st_size > 0
