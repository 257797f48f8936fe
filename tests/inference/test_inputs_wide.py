"""``dermlit predict``'s decoding of grayscale images wider than 8 bits: scaled, and noted."""

from pathlib import Path

import numpy as np
from PIL import Image

from dermlit.inference.inputs import decode


def test_a_sixteen_bit_image_is_scaled_and_the_note_says_so(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 255, 40).round().astype(np.uint16), (30, 1))
    Image.fromarray(gray * 257).save(tmp_path / "g16.png")
    Image.fromarray(gray.astype(np.uint8), "L").save(tmp_path / "g8.png")
    pixels, note = decode(tmp_path / "g16.png", 16)
    reference, _ = decode(tmp_path / "g8.png", 16)
    assert pixels.max() - pixels.min() > 150  # a ramp, not clipped to solid white
    np.testing.assert_allclose(pixels.astype(int), reference, atol=1)
    assert note == "grayscale (I;16) scaled to 8 bits, converted to RGB by repeating the channel"
