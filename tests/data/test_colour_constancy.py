"""Shades of Gray against numpy by hand; the cache applies it once and names it in its key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from dermlit.config import compose_config
from dermlit.data.cache import ImageCache
from dermlit.data.colour_constancy import NoColourConstancy, ShadesOfGray


def cast_image(seed: int = 0, cast=(1.0, 0.8, 0.55), n: int = 2) -> np.ndarray:
    """Grey-ish skin-like texture under a warm illuminant, kept below 255 (no clipping)."""
    rng = np.random.default_rng(seed)
    grey = rng.uniform(40, 200, size=(n, 24, 20, 1)) * rng.uniform(0.9, 1.1, size=(n, 24, 20, 3))
    return np.clip(grey * np.asarray(cast), 0, 255).round().astype(np.uint8)


def minkowski_means(img: np.ndarray, p: float) -> np.ndarray:
    x = img.astype(np.float64) / 255.0
    if np.isinf(p):
        return x.max(axis=(0, 1))
    return (x**p).mean(axis=(0, 1)) ** (1 / p)


def by_hand(img: np.ndarray, p: float) -> np.ndarray:
    """Barata et al.'s correction in numpy: gain_c = |e| / (sqrt(3) e_c)."""
    e = minkowski_means(img, p)
    gain = np.linalg.norm(e) / (np.sqrt(3) * e)
    return np.clip(img.astype(np.float64) * gain, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("p", [1.0, 6.0, np.inf])
def test_shades_of_gray_neutralises_a_known_cast(p: float) -> None:
    images = cast_image()
    before = minkowski_means(images[0], p)
    assert before.max() / before.min() > 1.5  # a strong cast to begin with
    out = ShadesOfGray(p)(torch.from_numpy(images)).numpy()
    assert out.dtype == np.uint8 and out.shape == images.shape
    for img, corrected in zip(images, out, strict=True):
        np.testing.assert_array_equal(corrected, by_hand(img, p))  # per image, not per batch
        after = minkowski_means(corrected, p)
        np.testing.assert_allclose(after, after.mean(), rtol=0.01)  # equal p-norm means


def test_p1_is_gray_world_and_inf_is_max_rgb() -> None:
    img = cast_image(1)[0].astype(np.float64)
    gray_world = ShadesOfGray(1)(torch.from_numpy(cast_image(1))).numpy()[0].astype(np.float64)
    means = gray_world.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(means, means.mean(), rtol=0.01)
    max_rgb = ShadesOfGray(float("inf"))(torch.from_numpy(cast_image(1))).numpy()[0]
    maxima = max_rgb.reshape(-1, 3).max(0).astype(np.float64)
    np.testing.assert_allclose(maxima, maxima.mean(), atol=1.0)
    assert not np.allclose(img.reshape(-1, 3).max(0), img.reshape(-1, 3).max(0).mean(), atol=1)


def test_neutral_image_is_unchanged_and_range_is_clipped() -> None:
    grey = np.repeat(np.random.default_rng(2).integers(0, 256, (1, 8, 8, 1)), 3, -1)
    grey = grey.astype(np.uint8)
    np.testing.assert_array_equal(ShadesOfGray(6)(torch.from_numpy(grey)).numpy(), grey)
    # a saturated blue channel with a dim red: the red gain pushes bright reds past 255
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 120, 250
    img[0, 0, 0, 0] = 250
    out = ShadesOfGray(6)(torch.from_numpy(img)).numpy()
    assert out[0, 0, 0, 0] == 255 and out.dtype == np.uint8
    black = np.zeros((1, 4, 4, 3), np.uint8)  # no illuminant estimate: stays black, no NaN
    np.testing.assert_array_equal(ShadesOfGray(6)(torch.from_numpy(black)).numpy(), black)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        ShadesOfGray()(torch.zeros(1, 4, 4, 3))
    with pytest.raises(ValueError, match="p must be >= 1"):
        ShadesOfGray(0.5)


def test_config_options_instantiate() -> None:
    cfg = compose_config("train", ["colour_constancy=shades_of_gray"])
    cc = instantiate(cfg.data.colour_constancy)
    assert isinstance(cc, ShadesOfGray) and cc.p == 6.0
    none = instantiate(compose_config("train", []).data.colour_constancy)
    assert type(none) is NoColourConstancy


def test_cache_applies_it_once_and_keys_on_it(tmp_path) -> None:
    images = cast_image(3, n=3)
    rows = []
    for i, img in enumerate(images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(path)  # lossless: the cache decodes exactly these pixels
        rows.append({"image_id": f"img{i}", "path": str(path)})
    df = pd.DataFrame(rows)
    size = 20  # the shorter side: no resize, a centre crop of 24 -> 20 rows
    plain = ImageCache.build_or_load(df, size, tmp_path / "c")
    cc = ImageCache.build_or_load(df, size, tmp_path / "c", colour_constancy=ShadesOfGray(6))
    assert plain.path != cc.path and "sog6" in cc.path.name and "sog" not in plain.path.name
    expected = ShadesOfGray(6)(torch.from_numpy(np.array(plain.array))).numpy()
    np.testing.assert_array_equal(np.asarray(cc.array), expected)
    assert not np.array_equal(np.asarray(cc.array), np.asarray(plain.array))
    again = ImageCache.build_or_load(df, size, tmp_path / "c", colour_constancy=ShadesOfGray(6))
    assert again.path == cc.path
    assert ShadesOfGray(1).cache_key != ShadesOfGray(6).cache_key
