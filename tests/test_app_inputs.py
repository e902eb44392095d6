"""Uploads are decoded safely: size limit, decoding not names, EXIF, modes, bomb guard."""

import io

import numpy as np
import pytest
from PIL import Image

from app.config import AppConfig, parse_config
from app.inputs import MAX_SIDE, UploadError, read_upload


def _bytes(image: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def test_plain_jpeg_decodes_unchanged():
    image = Image.new("RGB", (30, 20), (200, 100, 50))
    upload = read_upload(_bytes(image, "JPEG", quality=95), "a.jpg")
    assert upload.image.mode == "RGB" and upload.image.size == (30, 20)
    assert np.abs(np.asarray(upload.image, dtype=int) - [200, 100, 50]).max() <= 3
    assert upload.notes == []


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 10), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # white block at the left end
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    upload = read_upload(_bytes(image, "JPEG", exif=exif, quality=95), "side.jpg")
    assert upload.image.size == (10, 40)
    top = np.asarray(upload.image)[:10].mean()
    bottom = np.asarray(upload.image)[-10:].mean()
    assert top > 200 and bottom < 50  # the left end is now on top
    assert any("EXIF" in note for note in upload.notes)


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    pixels = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    upload = read_upload(_bytes(Image.fromarray(pixels)), "scan.png")
    values = np.asarray(upload.image)
    assert upload.image.mode == "RGB" and 120 <= values.mean() <= 135
    assert any("16-bit" in note for note in upload.notes)


def test_alpha_is_flattened_onto_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    upload = read_upload(_bytes(image), "cut.png")
    assert np.asarray(upload.image).min() == 255
    assert any("transparency" in note for note in upload.notes)


def test_oversized_image_is_downscaled_and_reported():
    image = Image.new("RGB", (MAX_SIDE * 2, 300), (10, 120, 200))
    upload = read_upload(_bytes(image, "JPEG"), "big.jpg")
    assert upload.image.size == (MAX_SIDE, 150)
    assert any(f"downscaled from {MAX_SIDE * 2}x300" in note for note in upload.notes)


def test_decompression_bomb_guard_stays_on_and_is_reported(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = _bytes(Image.new("RGB", (40, 40)))  # 1,600 pixels: over the (lowered) limit
    with pytest.raises(UploadError, match="bomb.png was refused by the decompression-bomb guard"):
        read_upload(data, "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == 1000  # not switched off to get the image through


@pytest.mark.parametrize(
    "data, name, message",
    [
        (b"", "empty.jpg", "empty.jpg is empty"),
        (b"name says jpeg, bytes say text", "fake.jpg", "fake.jpg is not an image"),
        (_bytes(Image.new("RGB", (8, 8)), "GIF"), "anim.gif", "anim.gif is a GIF file"),
    ],
)
def test_bad_uploads_name_the_file(data, name, message):
    with pytest.raises(UploadError, match=message):
        read_upload(data, name)


def test_truncated_jpeg_is_a_clear_error():
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = _bytes(Image.fromarray(noise), "JPEG")
    with pytest.raises(UploadError, match="cut.jpg could not be decoded.*truncated or corrupt"):
        read_upload(data[: len(data) // 2], "cut.jpg")


def test_size_limit():
    data = _bytes(Image.new("RGB", (8, 8)))
    with pytest.raises(UploadError, match=r"huge.png is 0.0 MB; the limit is 1e-05 MB"):
        read_upload(data, "huge.png", max_mb=0.00001)


def test_config_layers_defaults_file_and_arguments(tmp_path):
    assert parse_config([]) == AppConfig()
    path = tmp_path / "app.yaml"
    path.write_text("index: /srv/index\nmax_upload_mb: 5\n")
    config = parse_config(["--config", str(path), "--skinvl", "vl.ckpt"])
    assert (config.index, config.max_upload_mb, config.skinvl) == ("/srv/index", 5, "vl.ckpt")
    assert config.checkpoint == AppConfig().checkpoint
    path.write_text("indx: /srv/index\n")
    with pytest.raises(ValueError, match="unknown: indx"):
        parse_config(["--config", str(path)])
    with pytest.raises(FileNotFoundError, match="App config not found"):
        parse_config(["--config", str(tmp_path / "none.yaml")])
    with pytest.raises(ValueError, match="max_upload_mb must be a positive number"):
        parse_config(["--max-upload-mb", "0"])


def test_skinclip_app_refuses_bad_arguments_before_serving(tmp_path, caplog):
    from skinclip.cli import main

    assert main(["app", "--max-upload-mb", "-1"]) == 2
    assert main(["app", "--max-upload-mb", "inf"]) == 2
    assert main(["app", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "max_upload_mb must be a positive number" in caplog.text
    assert "App config not found" in caplog.text
    bad_yaml, wrong_type = tmp_path / "bad.yaml", tmp_path / "int.yaml"
    bad_yaml.write_text("index: [unclosed\n")
    wrong_type.write_text("checkpoint: 123\n")
    assert main(["app", "--config", str(bad_yaml)]) == 2
    assert main(["app", "--config", str(wrong_type)]) == 2
    assert "is not readable YAML" in caplog.text and "checkpoint must be a path" in caplog.text
    with pytest.raises(SystemExit):
        main(["app", "--port", "70000"])


def test_thin_or_tiny_images_are_refused_before_decoding():
    with pytest.raises(UploadError, match=r"strip.png is 6000x1 pixels: too small or too thin"):
        read_upload(_bytes(Image.new("RGB", (6000, 1))), "strip.png")
    with pytest.raises(UploadError, match="too small"):
        read_upload(_bytes(Image.new("RGB", (3, 3))), "dot.png")


def test_huge_non_jpeg_is_refused_before_a_full_size_decode(monkeypatch):
    from app import inputs

    monkeypatch.setattr(inputs, "MAX_FULL_DECODE_PIXELS", 100 * 100)
    with pytest.raises(UploadError, match=r"wide.png is 200x100 pixels, more than this page"):
        read_upload(_bytes(Image.new("RGB", (200, 100))), "wide.png")
    # A JPEG decodes at reduced size, so the same pixel count is fine.
    assert read_upload(_bytes(Image.new("RGB", (200, 100)), "JPEG"), "wide.jpg").image.size
