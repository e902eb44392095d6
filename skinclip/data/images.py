"""Image decoding shared by shard writing, training and inference, so all see the same pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without losing the picture.

    - 16-bit and 32-bit greyscale (``I;16``, ``I``, ``F``) are rescaled to 0-255; PIL's own
      ``convert`` clips them, which turns most 16-bit photos white.
    - Transparent pixels carry arbitrary colours, so alpha is flattened onto white.
    - EXIF orientation is applied, so a photo is seen the way a viewer shows it.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        if image.mode == "I" and pixels.max() <= 255:
            scale = 255.0
        pixels = np.clip(pixels / scale * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to RGB, letting the JPEG decoder downscale when it can.

    ``draft`` asks libjpeg for a reduced-size DCT decode (1/2, 1/4, 1/8) that still covers
    ``min_side``, which is several times faster than decoding full size and resizing.
    """
    image = Image.open(io.BytesIO(data))
    if min_side and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    return to_rgb(image)
