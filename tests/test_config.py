"""dermlit.config's compose helper: conf/ fragments composed by Hydra, not read by hand."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dermlit.config import CONF_DIR, compose_config, group_options


def test_a_group_option_composes_with_its_defaults_list() -> None:
    """data/ham10000 extends data/_base and adds data/near_duplicates by its defaults list: a
    hand-loaded yaml would have neither."""
    data = compose_config("train", ["data=ham10000"]).data
    raw = OmegaConf.load(CONF_DIR / "data" / "ham10000.yaml")
    assert "image_size" not in raw and data.image_size == 64  # from _base
    assert data.near_duplicates.threshold == 0.8  # from near_duplicates/default
    assert group_options("data") == sorted(
        p.stem for p in (CONF_DIR / "data").glob("*.yaml") if not p.stem.startswith("_")
    )


def test_composing_inside_an_initialised_hydra_leaves_it_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("x: 1\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        assert compose_config(None, ["+augment=none"]).augment._target_.endswith("NoAugment")
        assert GlobalHydra.instance().is_initialized()
        assert compose("mine").x == 1  # still the caller's config directory
    assert not GlobalHydra.instance().is_initialized()
