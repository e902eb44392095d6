"""Image decoding and transforms for training and evaluation."""

from __future__ import annotations

import io

from PIL import Image
from torchvision import transforms as T

from skinclip.model.towers import IMAGENET_MEAN, IMAGENET_STD


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Decode image bytes to RGB, letting the JPEG decoder downscale when it can.

    ``draft`` asks libjpeg for a reduced-size DCT decode (1/2, 1/4, 1/8) that still covers
    ``min_side``, which is several times faster than decoding full size and resizing.
    """
    image = Image.open(io.BytesIO(data))
    if min_side and image.format == "JPEG":
        image.draft("RGB", (min_side, min_side))
    return image.convert("RGB")


def train_transform(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    """Augmentations that respect what lesion images allow.

    Lesions have no canonical orientation, so flips and right-angle-free rotations are safe;
    colour is diagnostic, so colour jitter is kept mild.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=(0.5, 1.0), ratio=(0.8, 1.25)),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.05),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def eval_transform(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> T.Compose:
    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
