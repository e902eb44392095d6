"""The one in-memory unit that every source reader yields and the shard writer consumes."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MODALITIES = ("clinical", "dermoscopic", "pathology")
SPLITS = ("train", "val", "test")

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(text: str) -> str:
    """Turn an arbitrary id into a webdataset key.

    Dots are replaced too, because webdataset reads everything after a dot as an extension.
    """
    return _KEY_UNSAFE.sub("_", text).strip("_")


@dataclass(frozen=True)
class ImageRecord:
    """One image of one case, with every caption phrasing that the case's fields support.

    Attributes:
        key: Unique sample key inside the shards (safe characters only).
        image_path: Where the image file lives on disk.
        captions: Caption phrasings; ``captions[0]`` is the canonical one written as ``txt``.
        meta: Metadata written as the sample's ``json``. Always holds ``case_id``, ``modality``,
            ``diagnosis``, ``location``, ``sex``, ``source`` and ``split`` (unknown values are
            ``None``); sources may add more fields.
    """

    key: str
    image_path: Path
    captions: tuple[str, ...]
    meta: dict = field(default_factory=dict)


# Spellings seen in public dermatology CSVs; anything else is not guessed at.
_MODALITY_ALIASES = {
    "clinical": "clinical",
    "clinic": "clinical",
    "dermoscopic": "dermoscopic",
    "dermoscopy": "dermoscopic",
    "dermatoscopic": "dermoscopic",
    "derm": "dermoscopic",
    "pathology": "pathology",
    "histopathology": "pathology",
    "histology": "pathology",
}
_SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def normalize_modality(value: str | None) -> str | None:
    """Map a modality spelling onto one of ``MODALITIES``.

    Args:
        value: Raw modality text, e.g. ``"Dermoscopy"``.

    Returns:
        The canonical modality, or ``None`` when the value is empty or not recognised.
    """
    if value is None:
        return None
    return _MODALITY_ALIASES.get(str(value).strip().lower())


def normalize_split(value: str | None) -> str | None:
    """Map a split spelling (``train``, ``val``, ``valid``, ``validation``, ``test``) to ``SPLITS``.

    Args:
        value: Raw split text.

    Returns:
        The canonical split, or ``None`` when the value is empty or not recognised.
    """
    if value is None:
        return None
    return _SPLIT_ALIASES.get(str(value).strip().lower())
