import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermlit.data import cache as cache_module
from dermlit.data.cache import ImageCache, load_square
from dermlit.data.sources import HAM10000Source


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    # 40x20 image: left quarter red, middle half green, right quarter blue
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10, 0] = 255
    pixels[:, 10:30, 1] = 255
    pixels[:, 30:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "x.png")
    out = load_square(tmp_path / "x.png", 10)  # shorter side 20 -> 10, width 40 -> 20, crop 5..15
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out[:, 1:-1, 1].min() > 200 and out[:, :, 0].max() < 60 and out[:, :, 2].max() < 60


def count_decodes(monkeypatch) -> list[int]:
    calls = [0]
    real = cache_module.load_square

    def counting(path, size):
        calls[0] += 1
        return real(path, size)

    monkeypatch.setattr(cache_module, "load_square", counting)
    return calls


def test_decodes_once_then_memory_maps(tiny_ham: Path, tmp_path: Path, monkeypatch) -> None:
    df = HAM10000Source(tiny_ham).load()[0]
    calls = count_decodes(monkeypatch)
    first = ImageCache.build_or_load(df, 16, tmp_path / "c")
    assert calls[0] == len(df)
    second = ImageCache.build_or_load(df, 16, tmp_path / "c")
    assert calls[0] == len(df), "second build decoded again"
    assert isinstance(second.array, np.memmap)
    np.testing.assert_array_equal(first.array, second.array)
    row = second.rows(df["image_id"].iloc[[5]])[0]
    np.testing.assert_array_equal(second.array[row], load_square(df["path"].iloc[5], 16))


@pytest.mark.parametrize("change", ["size", "image"])
def test_cache_invalidated_when_source_or_size_changes(
    tiny_ham: Path, tmp_path: Path, monkeypatch, change: str
) -> None:
    df = HAM10000Source(tiny_ham).load()[0]
    ImageCache.build_or_load(df, 16, tmp_path / "c")
    calls = count_decodes(monkeypatch)
    size = 16
    if change == "size":
        size = 24
    else:
        path = Path(df["path"].iloc[0])
        Image.new("RGB", (40, 30), (200, 20, 90)).save(path, quality=100)
        os.utime(path, ns=(1, 1))
    rebuilt = ImageCache.build_or_load(df, size, tmp_path / "c")
    assert calls[0] == len(df)
    if change == "image":
        pixel = rebuilt.array[rebuilt.rows(df["image_id"].iloc[[0]])[0], 0, 0]
        np.testing.assert_allclose(pixel, (200, 20, 90), atol=4)  # JPEG is lossy


def test_fingerprint_is_the_same_for_the_same_files_reached_by_another_path(tiny_ham) -> None:
    from dermlit.data.fingerprint import stat_fingerprint

    direct, _ = HAM10000Source(tiny_ham).load()
    detour, _ = HAM10000Source(tiny_ham / "images" / "..").load()
    assert detour["path"].iloc[0] != direct["path"].iloc[0]  # the strings differ
    before = stat_fingerprint(direct)
    assert stat_fingerprint(detour) == before
    (tiny_ham / "images" / f"{direct['image_id'].iloc[0]}.jpg").write_bytes(b"changed")
    assert stat_fingerprint(direct) != before


def test_a_failure_that_was_transient_is_decoded_on_the_next_load(
    tiny_ham: Path, tmp_path: Path, monkeypatch
) -> None:
    """The key holds the files' bytes, not whether they could be read: an I/O error at build
    time must not drop the image from every later run (it did, until the cache was deleted)."""
    df = HAM10000Source(tiny_ham).load()[0]
    victim, real = df["image_id"].iloc[3], cache_module.load_square

    def flaky(path, size):
        if victim in str(path):
            raise OSError(5, "Input/output error")
        return real(path, size)

    monkeypatch.setattr(cache_module, "load_square", flaky)
    assert set(ImageCache.build_or_load(df, 16, tmp_path / "c").bad) == {victim}
    monkeypatch.setattr(cache_module, "load_square", real)
    calls = count_decodes(monkeypatch)
    healed = ImageCache.build_or_load(df, 16, tmp_path / "c")
    assert healed.bad == {} and calls[0] == 1, "only the earlier failure is decoded again"
    row = healed.rows(df["image_id"].iloc[[3]])[0]
    np.testing.assert_array_equal(healed.array[row], load_square(df["path"].iloc[3], 16))
    assert ImageCache.build_or_load(df, 16, tmp_path / "c").bad == {}  # and it was persisted


def test_a_corrupt_file_stays_a_failure(tiny_ham: Path, tmp_path: Path) -> None:
    df = HAM10000Source(tiny_ham).load()[0]
    Path(df["path"].iloc[2]).write_bytes(b"not a jpeg")
    df = HAM10000Source(tiny_ham).load()[0]
    first = ImageCache.build_or_load(df, 16, tmp_path / "c")
    again = ImageCache.build_or_load(df, 16, tmp_path / "c")
    assert set(first.bad) == set(again.bad) == {df["image_id"].iloc[2]}
    assert "UnidentifiedImageError" in again.bad[df["image_id"].iloc[2]]


def gray_ramp() -> np.ndarray:
    """An 8-bit grayscale ramp with its extremes, 30 x 40."""
    return np.tile(np.linspace(0, 255, 40).round().astype(np.uint8), (30, 1))


@pytest.mark.parametrize(
    ("mode", "suffix", "encode"),
    [
        ("I;16", ".png", lambda g: g.astype(np.uint16) * 257),  # 16-bit PNG, full range
        ("F", ".tif", lambda g: g.astype(np.float32) / 255),  # float TIFF in [0, 1]
        ("F", ".tif", lambda g: g.astype(np.float32)),  # float TIFF in [0, 255]
        ("I", ".tif", lambda g: g.astype(np.int32) * 257),  # 32-bit int holding 16-bit data
    ],
)
def test_wide_grayscale_is_scaled_to_eight_bits_not_clipped(
    tmp_path: Path, mode: str, suffix: str, encode
) -> None:
    """PIL's convert("RGB") clips I;16/I/F to 0-255: a 16-bit image came out solid white and a
    [0, 1] float one solid black. The reference is the same ramp saved as 8-bit L."""
    gray = gray_ramp()
    Image.fromarray(gray, "L").save(tmp_path / "ref.png")
    path = tmp_path / f"wide{suffix}"
    wide = Image.fromarray(encode(gray))
    wide = wide if wide.mode == mode else wide.convert(mode)
    wide.save(path)
    with Image.open(path) as img:
        assert img.mode in (mode, "I;16") and img.mode != "L"
    np.testing.assert_allclose(
        load_square(path, 16).astype(int), load_square(tmp_path / "ref.png", 16), atol=1
    )


def test_a_grayscale_image_of_unknown_range_is_refused_with_its_values(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    Image.fromarray(np.full((20, 20), -3.5, np.float32)).save(path)
    with pytest.raises(ValueError, match=r"F image with values in \[-3.5, -3.5\].*8-bit RGB"):
        load_square(path, 16)
