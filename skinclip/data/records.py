"""The one in-memory unit that every source reader yields and the shard writer consumes."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MODALITIES = ("clinical", "dermoscopic", "pathology")
SPLITS = ("train", "val", "test")

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def read_text(path: Path) -> str:
    """Read a UTF-8 text file (a BOM is allowed), or say how to fix its encoding."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}). Re-save it as UTF-8, "
            "for example 'CSV UTF-8' in a spreadsheet program."
        ) from None


def safe_key(text: str) -> str:
    """Turn an arbitrary id into a webdataset key.

    Dots are replaced too, because webdataset reads everything after a dot as an extension.
    When anything had to be replaced, a digest of the original is appended: ``a b.jpg`` and
    ``a_b.jpg`` would otherwise become the same key.
    """
    cleaned = _KEY_UNSAFE.sub("_", text).strip("_")
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


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
