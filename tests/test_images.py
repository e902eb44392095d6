"""Image conversion shared by shards, training and inference."""

import io

import numpy as np
import pytest
from PIL import Image

from skinclip.data.images import decode_image, to_rgb
from skinclip.data.records import ImageRecord
from skinclip.data.shards import read_manifest, write_shards


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_16bit_greyscale_keeps_its_brightness():
    grey = np.full((8, 8), 165 * 257, dtype=np.uint16)  # 165 on an 8-bit scale
    rgb = decode_image(_png_bytes(Image.fromarray(grey)))
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).mean() == pytest.approx(165, abs=1)


def test_alpha_is_flattened_onto_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent
    assert np.asarray(to_rgb(rgba)).min() == 255


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue()).size == (20, 40)


def test_a_run_that_writes_nothing_fails_and_keeps_previous_shards(make_image, tmp_path):
    good = ImageRecord("a", make_image("a.jpg"), ("a nevus",), {"split": "train"})
    write_shards([good], tmp_path / "out")
    gone = ImageRecord("b", tmp_path / "gone.jpg", ("a mole",), {"split": "train"})
    with pytest.raises(ValueError, match="No sample could be written.*1 missing file.*gone.jpg"):
        write_shards([gone], tmp_path / "out")
    assert read_manifest(tmp_path / "out")["total_samples"] == 1
    assert len(list((tmp_path / "out" / "train").glob("shard-*.tar"))) == 1
