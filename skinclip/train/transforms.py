"""Image decoding and transforms for training and evaluation."""

from __future__ import annotations

from torchvision import transforms as T

from skinclip.model.towers import IMAGENET_MEAN, IMAGENET_STD


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
