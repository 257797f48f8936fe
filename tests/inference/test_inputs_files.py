"""Image files as users have them (an audit of ``dermlit predict`` and the training cache):
EXIF-rotated phone images, folders holding other files, ISIC ids whose files end in ``.JPG``,
and an image over Pillow's pixel limit. Each is predicted correctly, or named and counted."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from dermlit.data.cache import decode_into, load_square
from dermlit.data.sources import FolderSource
from dermlit.explain.lesion_overlap import load_lesion_mask
from dermlit.inference.inputs import decode, list_inputs

ORIENTATION = 0x0112


def asymmetric(h: int = 30, w: int = 40) -> np.ndarray:
    """An image whose every rotation and mirror differs: a bright top-left corner block."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 90, (h, w, 3)).astype(np.uint8)
    pixels[:8, :12] = 250
    return pixels


def save_with_orientation(path: Path, pixels: np.ndarray, turn: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = turn
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100, subsampling=0)


@pytest.mark.parametrize("turn", [3, 6, 8])
def test_an_exif_rotated_image_is_seen_upright_in_training_and_predict(tmp_path, turn) -> None:
    """PIL ignores the tag: training and predict used to see the stored pixels, sideways where
    the clinician's viewer shows the image upright. The reference is Pillow's exif_transpose of
    the file, saved without the tag."""
    tagged = tmp_path / "tagged.jpg"
    save_with_orientation(tagged, asymmetric(), turn)
    with Image.open(tagged) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    plain = tmp_path / "plain.png"
    upright.save(plain)
    reference = load_square(plain, 16).astype(int)
    np.testing.assert_allclose(load_square(tagged, 16).astype(int), reference, atol=8)
    pixels, note = decode(tagged, 16)
    np.testing.assert_array_equal(pixels, load_square(tagged, 16))  # predict = training
    assert note == f"turned upright by its EXIF orientation ({turn})"
    # a mask drawn on the stored pixels turns with its image
    mask_pixels = np.zeros((30, 40), np.uint8)
    mask_pixels[:8, :12] = 255
    Image.fromarray(mask_pixels).save(tmp_path / "mask.png")
    mask = load_lesion_mask(tmp_path / "mask.png", 16, tagged)
    bright = pixels.mean(2) > 160
    assert (mask == bright).mean() > 0.95


def test_a_folder_names_and_counts_what_it_does_not_read(tmp_path, capsys, caplog) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.jfif", "c.JPG"):
        Image.fromarray(asymmetric()).save(
            folder / name, format="PNG" if name.endswith("png") else "JPEG"
        )
    Image.fromarray(asymmetric()).save(folder / "d.gif")
    (folder / "sub").mkdir()
    Image.fromarray(asymmetric()).save(folder / "sub" / "e.png")
    (folder / "f.png").symlink_to(tmp_path / "missing.png")
    (folder / "g.heic").symlink_to(tmp_path / "missing.heic")
    items, skipped = list_inputs(folder, None)
    # the broken .png link is an input, so that its row says "file not found"
    assert [i.name for i in items] == ["a.png", "b.jfif", "c.JPG", "f.png"]
    assert skipped == [
        ("d.gif", "suffix .gif is not an image's"),
        ("g.heic", "broken link"),
        ("sub/", "sub-folder, not searched"),
    ]
    assert decode(items[1].path, 16)[0].shape == (16, 16, 3)  # .jfif is a JPEG
    with caplog.at_level(logging.WARNING):
        df, _ = FolderSource(folder).load()
    assert df["image_id"].tolist() == ["a", "b", "c", "f"]
    assert f"{folder}: entries not read as images: 3 (d.gif" in caplog.text
    assert "d.gif (suffix .gif is not an image's)" in caplog.text


def test_csv_ids_without_a_suffix_find_upper_case_files(tmp_path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(asymmetric()).save(images / "ISIC_1.JPG", format="JPEG")
    Image.fromarray(asymmetric()).save(images / "ISIC_2.jpeg")
    pd.DataFrame({"image": ["ISIC_1", "ISIC_2"]}).to_csv(tmp_path / "in.csv", index=False)
    items, skipped = list_inputs(tmp_path / "in.csv", images)
    assert [i.path.name for i in items] == ["ISIC_1.JPG", "ISIC_2.jpeg"] and skipped == []


def test_an_image_over_the_pixel_limit_is_a_failure_of_that_image(tmp_path, monkeypatch) -> None:
    """Pillow's DecompressionBombError is not an OSError: one such file crashed the whole cache
    build, even under data.on_error=skip, where predict lists it as an error row."""
    Image.fromarray(asymmetric()).save(tmp_path / "ok.png")
    Image.fromarray(asymmetric(300, 400)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 400 // 3)  # 2x the limit: an error
    array = np.zeros((2, 16, 16, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        bad = decode_into(
            array,
            [(0, str(tmp_path / "ok.png")), (1, str(tmp_path / "huge.png"))],
            ["ok", "huge"],
            16,
        )
    assert list(bad) == ["huge"] and bad["huge"].startswith("DecompressionBombError")
    assert array[0].any()


def test_an_image_smaller_than_the_input_is_noted(tmp_path) -> None:
    Image.fromarray(asymmetric(10, 12)).save(tmp_path / "thumb.png")
    pixels, note = decode(tmp_path / "thumb.png", 16)
    assert pixels.shape == (16, 16, 3)
    assert note == "12x10 px upscaled to the model's 16 px: less detail than trained on"
    assert decode(tmp_path / "thumb.png", 10)[1] == ""
