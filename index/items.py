"""Per-image metadata rows of a case index: validation and the ``items.jsonl`` format.

An item is one indexed image. It is a flat dict that always holds ``key`` (unique per image,
the same key the shards use) and ``case_id`` (shared by every image of one case). Other fields
(``caption``, ``diagnosis``, ``modality``, ``image_path``, ``source``, ``split``, ...) are kept
as given, so they must be JSON-serialisable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path, PurePath

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("key", "case_id")


def clean_items(items: Sequence[dict]) -> list[dict]:
    """Validate metadata rows and return JSON-ready copies of them.

    ``pathlib`` values are turned into strings, because image records carry ``image_path`` as a
    ``Path`` and the rows must read back from disk unchanged.

    Args:
        items: One dict per embedding row, in the same order.

    Returns:
        Shallow copies of the rows, safe to store and serialise.

    Raises:
        ValueError: If a row is not a dict, lacks a required field, has an empty or non-string
            ``key``/``case_id``, repeats a ``key``, or holds a value JSON cannot encode.
    """
    cleaned = []
    seen: dict[str, int] = {}
    for row, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"items[{row}] must be a dict; got {type(item).__name__}.")
        for field in REQUIRED_FIELDS:
            value = item.get(field)
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"items[{row}] needs a non-empty string {field!r}; got {value!r}. "
                    "Convert ids with str() before building the index."
                )
        key = item["key"]
        if key in seen:
            raise ValueError(
                f"items[{row}] repeats key {key!r} from items[{seen[key]}]; keys must be unique."
            )
        seen[key] = row

        item = {k: str(v) if isinstance(v, PurePath) else v for k, v in item.items()}
        try:
            json.dumps(item)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"items[{row}] (key {key!r}) has a value JSON cannot store: {err}. "
                "Convert numpy scalars and other objects to plain str/int/float first."
            ) from err
        cleaned.append(item)
    return cleaned


def write_items(items: Sequence[dict], path: Path) -> None:
    """Write rows as JSON lines, one item per line, in index order."""
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def read_items(path: Path) -> list[dict]:
    """Read rows written by `write_items`.

    Raises:
        ValueError: If a line is not a JSON object, naming the file and line number.
    """
    items = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_no}, is not valid JSON ({err}). The index folder is "
                    "corrupt; rebuild it with `skinclip index`."
                ) from err
            if not isinstance(item, dict):
                raise ValueError(
                    f"{path}, line {line_no}, is not a JSON object. The index folder is "
                    "corrupt; rebuild it with `skinclip index`."
                )
            items.append(item)
    return items
