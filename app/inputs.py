"""Uploaded images: checked by decoding, never by file name, and made safe to process.

An upload is bytes from a browser. It never becomes a path: nothing the user sends reaches
the file system. Pillow's decompression-bomb guard stays on; an image it refuses is reported,
not decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from skinclip.data.images import to_rgb

DEFAULT_MAX_UPLOAD_MB = 20
# Larger images are downscaled before anything else: the model sees 224 px and the page shows
# at most a few hundred, so more pixels only cost memory and time.
MAX_SIDE = 2048
MIN_SIDE = 4
# Formats other than JPEG decode at full size before downscaling (about 3 bytes a pixel), so a
# server taking several uploads at once refuses them above this; JPEG decodes reduced.
MAX_FULL_DECODE_PIXELS = 40_000_000
MAX_ASPECT = 100  # longer side over shorter side
# Formats a camera, dermatoscope or slide scanner export; anything else is refused.
ACCEPTED_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "MPO")
_EXIF_ORIENTATION = 0x0112


class UploadError(ValueError):
    """An upload that cannot be used; the message names the file and what to do."""


@dataclass
class Upload:
    """A decoded upload.

    Attributes:
        image: 8-bit RGB, upright, at most :data:`MAX_SIDE` on its longer side.
        name: The file name the browser gave, for messages only.
        notes: What was changed to make it usable (rotation, conversion, downscaling).
    """

    image: Image.Image
    name: str
    notes: list[str] = field(default_factory=list)


def read_upload(data: bytes, name: str, max_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Upload:
    """Decode uploaded bytes into an RGB image, or explain why not.

    Args:
        data: The file's bytes.
        name: Its name as given by the browser (shown in messages, never opened).
        max_mb: Size limit in megabytes.

    Raises:
        UploadError: For an empty, oversized, unknown, corrupt or bomb-sized file.
    """
    if not data:
        raise UploadError(f"{name} is empty. Upload a JPEG or PNG image of the lesion.")
    if len(data) > max_mb * 1024 * 1024:
        raise UploadError(
            f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_mb:g} MB. "
            "Export a smaller JPEG and upload that."
        )
    try:
        # The guard's warning (above Image.MAX_IMAGE_PIXELS) is treated like its error (above
        # twice that): either way the pixels are not decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                raise UploadError(
                    f"{name} is a {image.format} file; upload one of {', '.join(ACCEPTED_FORMATS)}."
                )
            return _prepare(image, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UploadError(
            f"{name} was refused by the decompression-bomb guard ({err}). Downscale it below "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels and upload it again."
        ) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"{name} is not an image this tool can read (checked by decoding, not by its "
            "name). Upload a JPEG or PNG image."
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, UploadError):
            raise
        raise UploadError(
            f"{name} could not be decoded ({err}); the file is probably truncated or corrupt. "
            "Export it again and upload the new file."
        ) from None


def _prepare(image: Image.Image, name: str) -> Upload:
    notes = []
    size, mode = image.size, image.mode
    if min(size) < MIN_SIDE or max(size) > MAX_ASPECT * min(size):
        # Checked before decoding; a strip of pixels also cannot be shown or cropped.
        raise UploadError(
            f"{name} is {size[0]}x{size[1]} pixels: too small or too thin to be a photograph of "
            f"a lesion (at least {MIN_SIDE} px a side, at most {MAX_ASPECT}:1)."
        )
    if size[0] * size[1] > MAX_FULL_DECODE_PIXELS and image.format != "JPEG":
        raise UploadError(
            f"{name} is {size[0]}x{size[1]} pixels, more than this page decodes from a "
            f"{image.format} file ({MAX_FULL_DECODE_PIXELS:,}). Downscale it, or export a JPEG."
        )
    if max(size) > MAX_SIDE and image.format == "JPEG":
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # a cheaper reduced-size decode
    if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        notes.append("rotated upright from its EXIF orientation")
    if mode not in ("RGB", "YCbCr"):
        notes.append(f"converted from {_mode_name(mode)} to 8-bit colour")
    image = to_rgb(image)  # decodes every pixel: a truncated file fails here
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if image.size != size and max(size) > MAX_SIDE:
        notes.append(f"downscaled from {size[0]}x{size[1]} to {image.size[0]}x{image.size[1]}")
    return Upload(image, name, notes)


def _mode_name(mode: str) -> str:
    if mode.startswith("I;16"):
        return "16-bit greyscale"
    if mode in ("RGBA", "LA", "PA"):
        return f"{mode} with transparency (flattened onto white)"
    if mode in ("L", "1"):
        return "greyscale"
    return mode
