"""Shared fixtures: the real HAM10000 copy (skipped when absent) and tiny on-disk datasets."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermlit.constants import CLASSES

REPO = Path(__file__).resolve().parents[1]
HAM_DIR = Path(os.environ.get("DERMLIT_HAM10000", REPO.parent / "shared/data/ham10000-200x150"))


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    if not (HAM_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 not found at {HAM_DIR} (set DERMLIT_HAM10000 to its folder)")
    return HAM_DIR


def write_tiny_ham(root: Path, lesions_per_class: int = 4, images_per_lesion: int = 2) -> Path:
    """A HAM10000-layout dataset of flat-coloured JPEGs: class c has a distinct colour."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for c, label in enumerate(CLASSES):
        for lesion in range(lesions_per_class):
            lesion_id = f"L{c}{lesion:03d}"
            for k in range(images_per_lesion):
                image_id = f"IMG_{c}{lesion:03d}{k}"
                colour = np.array([30 * c, 255 - 30 * c, 100], dtype=np.uint8)
                pixels = np.clip(colour + rng.integers(-5, 5, (30, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / "images" / f"{image_id}.jpg", quality=95)
                rows.append((lesion_id, image_id, label, "histo", 50.0, "male", "back"))
    cols = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    pd.DataFrame(rows, columns=cols).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


@pytest.fixture
def tiny_ham(tmp_path: Path) -> Path:
    return write_tiny_ham(tmp_path / "ham")


# ---- in-process training (like lightning-hydra-template's tests/conftest.py) ----------------


#: the in-process runs' default: the report's figures cost ~2.5 s an evaluation, a fifth of
#: `make test`; a test that looks at them passes ``evaluation.figures=true`` (later wins)
NO_FIGURES = ["evaluation.figures=false"]


def compose_train(run_dir: Path, cache_dir: Path, overrides: list[str]):
    """The train config as ``dermlit-train`` composes it, with the Hydra config set, so that
    ``train(cfg)`` runs in this process (``${hydra:...}`` interpolations resolve)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from dermlit.config import compose_config

    cfg = compose_config(
        "train",
        [
            f"hydra.run.dir={run_dir}",
            f"paths.cache_dir={cache_dir}",
            f"paths.run_dir={run_dir}",
            *NO_FIGURES,
            *overrides,
        ],
        return_hydra_config=True,
    )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def train_cache_dir(tmp_path_factory) -> Path:
    """One synthetic-data/decode cache for every in-process run of the session."""
    return tmp_path_factory.mktemp("dermlit-cache")


@pytest.fixture(scope="session")
def train_in_process(train_cache_dir: Path):
    """``train_in_process(run_dir, *overrides) -> (cfg, metrics)``: dermlit-train's train(cfg)
    in this process, on the session's cache (no Hydra callbacks: no run-directory guard, no
    error.log, no exit statuses; the entry point's own tests cover those)."""
    from dermlit.train import train

    def run(run_dir: Path, *overrides: str):
        cfg = compose_train(Path(run_dir), train_cache_dir, list(overrides))
        return cfg, train(cfg)

    return run


@pytest.fixture(scope="session")
def trained_run(train_in_process, train_cache_dir: Path):
    """``with trained_run(run_dir, *overrides) as (cfg, metrics):`` a run trained in-process,
    with ``DERMLIT_CACHE`` on the session's cache inside the block, so that a module's later
    evaluations and predictions read the images the run decoded."""

    @contextmanager
    def run(run_dir: Path, *overrides: str):
        cfg, metrics = train_in_process(run_dir, *overrides)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DERMLIT_CACHE", str(train_cache_dir))
            yield cfg, metrics

    return run


@pytest.fixture(scope="session")
def eval_in_process():
    """``eval_in_process(*overrides) -> Evaluation``: dermlit-eval's evaluate(cfg) in-process."""
    from dermlit.config import compose_config
    from dermlit.evaluate import evaluate

    def run(*overrides: str):
        return evaluate(compose_config("eval", [*NO_FIGURES, *overrides]))

    return run
