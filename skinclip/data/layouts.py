"""Recognise which layout a data source has and dispatch it to its reader."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from skinclip.data.records import ImageRecord, read_text
from skinclip.data.sources import (
    CAPTION_COLUMNS,
    IMAGE_SUFFIXES,
    LAYOUTS,
    _read_derm7pt,
    read_caption_csv,
    read_image_folder,
    read_jsonl,
    read_llava,
    read_mmskin_vqa,
)

logger = logging.getLogger(__name__)


READERS: dict[str, Callable[..., Iterator[ImageRecord]]] = {
    "derm7pt": _read_derm7pt,
    "mmskin_vqa": read_mmskin_vqa,
    "csv": read_caption_csv,
    "jsonl": read_jsonl,
    "llava": read_llava,
    "folder": read_image_folder,
}


def _known_layouts() -> str:
    return "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())


def detect_source(path: Path) -> str:
    """Recognise the layout of a data source.

    Args:
        path: A folder, CSV, JSONL or JSON file.

    Returns:
        One of the keys of ``LAYOUTS``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the layout matches none of the known ones (the message lists them).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_dir():
        if (path / "meta" / "meta.csv").is_file():
            return "derm7pt"
        subdirs = [d for d in path.iterdir() if d.is_dir()]
        if any(f.suffix.lower() in IMAGE_SUFFIXES for d in subdirs for f in d.iterdir()):
            return "folder"
    elif path.suffix.lower() == ".csv":
        columns = _read_csv_header(path)
        if {"image", "question", "answer"} <= set(columns):
            return "mmskin_vqa"
        if "image" in columns and {*CAPTION_COLUMNS, "label"} & set(columns):
            return "csv"
        raise ValueError(
            f"{path} has the columns {columns}, which match no known CSV layout. Known layouts: "
            f"{_known_layouts()}."
        )
    elif path.suffix.lower() == ".jsonl":
        return "jsonl"
    elif path.suffix.lower() == ".json" and _looks_like_llava(path):
        return "llava"
    raise ValueError(f"Cannot tell the layout of {path}. Known layouts: {_known_layouts()}.")


def _read_csv_header(path: Path) -> list[str]:
    return next(csv.reader(io.StringIO(read_text(path), newline="")), [])


def _looks_like_llava(path: Path) -> bool:
    try:
        data = json.loads(read_text(path))
    except (json.JSONDecodeError, ValueError):
        return False
    if isinstance(data, list) and data and not isinstance(data[0], dict):
        return False
    return isinstance(data, list) and bool(data) and "conversations" in data[0]


def read_source(path: Path, kind: str = "auto", **opts) -> Iterator[ImageRecord]:
    """Read any known layout into records.

    Args:
        path: The source folder or file.
        kind: A key of ``READERS``, or ``"auto"`` to call ``detect_source``.
        **opts: Fields of ``SourceOptions`` (derm7pt takes none).

    Returns:
        An iterator of ``ImageRecord``.

    Raises:
        ValueError: If ``kind`` is unknown (the message lists the valid kinds).
    """
    if kind == "auto":
        kind = detect_source(path)
    if kind not in READERS:
        raise ValueError(f"Unknown source kind {kind!r}; choose 'auto' or one of {list(READERS)}.")
    logger.info("Reading %s as %s", path, kind)
    return READERS[kind](Path(path), **opts)
