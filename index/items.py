"""Per-image metadata rows of a case index: validation and the ``items.sqlite`` format.

An item is one indexed image. It is a flat dict that always holds ``key`` (unique per image,
the same key the shards use) and ``case_id`` (shared by every image of one case). Other fields
(``caption``, ``diagnosis``, ``modality``, ``image_path``, ``source``, ``split``, ...) are kept
as given, so they must be JSON-serialisable. On disk they live in ``items.sqlite``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
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
    """Write rows into a new SQLite file, one table row per item, in index order.

    SQLite keeps the metadata queryable with any SQL tool (``key`` and ``case_id`` are
    columns); ``data`` holds the full item as JSON.
    """
    con = sqlite3.connect(path)
    try:
        con.execute(
            "CREATE TABLE items (row INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
            "case_id TEXT NOT NULL, data TEXT NOT NULL)"
        )
        con.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            (
                (row, item["key"], item["case_id"], json.dumps(item))
                for row, item in enumerate(items)
            ),
        )
        con.commit()
    finally:
        con.close()


def read_items(path: Path) -> list[dict]:
    """Read rows written by `write_items`, in row order.

    Raises:
        ValueError: If the file is not such a database or a row is not a JSON object.
    """
    try:
        # as_uri() escapes '#', '?' and '%' in the folder name, which SQLite would parse.
        con = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT row, data FROM items ORDER BY row").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path} is not a readable index metadata database ({err}).") from err
    items = []
    for expected, (row, data) in enumerate(rows):
        try:
            item = json.loads(data)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, row {row}, is not valid JSON ({err}).") from err
        if row != expected or not isinstance(item, dict):
            raise ValueError(f"{path}, row {row}, is out of order or not a JSON object.")
        items.append(item)
    return items
