"""Read the derm7pt dermoscopy atlas into image records, with its official case split.

Layout expected under ``root``: ``meta/meta.csv`` (one row per case), the official split as
``meta/{train,valid,test}_indexes.csv`` (row indexes into ``meta.csv``, column ``indexes``) and
the images under ``images/``, at the paths given by the ``clinic`` and ``derm`` columns.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

from skinclip.data.captions import CRITERIA, build_captions
from skinclip.data.records import ImageRecord, safe_key
from skinclip.data.splits import hash_split

logger = logging.getLogger(__name__)

SOURCE = "derm7pt"

# The 4-class set used for zero-shot evaluation; other atlas diagnoses are left out of it.
ATLAS_4CLASS = ("melanoma", "nevus", "seborrheic keratosis", "basal cell carcinoma")

# Atlas diagnosis -> 4-class group. Every "melanoma..." diagnosis is also matched by prefix.
ATLAS_GROUPS = {
    "melanoma": "melanoma",
    "melanoma (in situ)": "melanoma",
    "melanoma (less than 0.76 mm)": "melanoma",
    "melanoma (0.76 to 1.5 mm)": "melanoma",
    "melanoma (more than 1.5 mm)": "melanoma",
    "melanoma metastasis": "melanoma",
    "clark nevus": "nevus",
    "reed or spitz nevus": "nevus",
    "dermal nevus": "nevus",
    "blue nevus": "nevus",
    "congenital nevus": "nevus",
    "combined nevus": "nevus",
    "recurrent nevus": "nevus",
    "seborrheic keratosis": "seborrheic keratosis",
    "basal cell carcinoma": "basal cell carcinoma",
}

REQUIRED_COLUMNS = (
    "case_num",
    "diagnosis",
    *CRITERIA,
    "elevation",
    "location",
    "sex",
    "management",
    "clinic",
    "derm",
)
# Optional columns copied into meta as they are when present.
_EXTRA_COLUMNS = ("seven_point_score", "level_of_diagnostic_difficulty", "notes")
# Index file stem -> split name; the atlas calls the validation split "valid".
_SPLIT_FILES = {"train": "train", "valid": "val", "test": "test"}


def diagnosis_group(diagnosis: str | None) -> str | None:
    """Map an atlas diagnosis to its class in ``ATLAS_4CLASS``.

    Args:
        diagnosis: Diagnosis as written in ``meta.csv``, e.g. ``"melanoma (in situ)"``.

    Returns:
        One of ``ATLAS_4CLASS``, or ``None`` for diagnoses outside the 4-class evaluation
        (e.g. lentigo, dermatofibroma, vascular lesion).
    """
    if diagnosis is None:
        return None
    text = " ".join(str(diagnosis).lower().split())
    if text.startswith("melanoma"):
        return "melanoma"
    return ATLAS_GROUPS.get(text)


def case_id_for(case_num: int) -> str:
    """Return the project's case id for a derm7pt case number, e.g. ``"derm7pt-0001"``."""
    return f"{SOURCE}-{case_num:04d}"


def read_meta(root: Path) -> list[dict[str, str | None]]:
    """Read ``meta/meta.csv`` and check its columns.

    Args:
        root: The derm7pt folder.

    Returns:
        One dict per case row; empty cells become ``None``.

    Raises:
        FileNotFoundError: If ``meta/meta.csv`` does not exist.
        ValueError: If required columns are missing.
    """
    path = Path(root) / "meta" / "meta.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; pass the derm7pt folder that holds meta/meta.csv and images/."
        )
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {missing}. A derm7pt meta.csv needs the columns "
                f"{list(REQUIRED_COLUMNS)}; found {columns}."
            )
        return [{k: (v.strip() or None) if v else None for k, v in row.items()} for row in reader]


def read_official_split(root: Path, num_rows: int) -> dict[int, str]:
    """Read the official split files into ``{row index: split}``.

    Args:
        root: The derm7pt folder.
        num_rows: Number of rows in ``meta.csv``, to check the indexes against.

    Returns:
        Row index to split; empty when the atlas ships no split files.

    Raises:
        ValueError: If an index is out of range, not an integer, or listed in two splits.
    """
    splits: dict[int, str] = {}
    for stem, split in _SPLIT_FILES.items():
        path = Path(root) / "meta" / f"{stem}_indexes.csv"
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "indexes" not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path} needs a column 'indexes' (row numbers into meta.csv); "
                    f"found {reader.fieldnames}."
                )
            for line, row in enumerate(reader, start=2):
                try:
                    index = int(row["indexes"])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{path} line {line}: index {row['indexes']!r} is not an integer."
                    ) from None
                if not 0 <= index < num_rows:
                    raise ValueError(
                        f"{path} line {line}: index {index} is outside meta.csv's "
                        f"{num_rows} rows (0-based)."
                    )
                if splits.get(index, split) != split:
                    raise ValueError(
                        f"{path} line {line}: row {index} is already in split "
                        f"{splits[index]!r}; a case must be in one split only."
                    )
                splits[index] = split
    return splits


def _case_meta(row: dict[str, str | None], case_id: str, split: str) -> dict:
    meta: dict = {
        "case_id": case_id,
        "diagnosis": row["diagnosis"],
        "diagnosis_group": diagnosis_group(row["diagnosis"]),
        "location": row["location"],
        "sex": row["sex"],
        "source": SOURCE,
        "split": split,
        "elevation": row["elevation"],
        "management": row["management"],
    }
    meta.update({c: row[c] for c in CRITERIA})
    meta.update({c: row.get(c) for c in _EXTRA_COLUMNS if c in row})
    score = meta.get("seven_point_score")
    if score is not None and score.lstrip("-").isdigit():
        meta["seven_point_score"] = int(score)
    return meta


def read_atlas(root: Path) -> Iterator[ImageRecord]:
    """Yield one record per atlas image: a dermoscopic one and, when present, a clinical one.

    In a few cases the atlas repeats the dermoscopic path as ``clinic`` because there is no
    clinical photograph; those cases yield the dermoscopic record only. Missing image files are
    still yielded, so the shard writer reports them as skipped instead of losing them here.

    Args:
        root: The derm7pt folder (holding ``meta/`` and ``images/``).

    Yields:
        ``ImageRecord`` with keys like ``"derm7pt-0001_dermoscopic"``.

    Raises:
        FileNotFoundError: If ``meta/meta.csv`` does not exist.
        ValueError: If ``meta.csv`` or a split file is malformed.
    """
    root = Path(root)
    rows = read_meta(root)
    official = read_official_split(root, len(rows))
    if not official:
        logger.warning("%s has no official split files; splitting cases by hash", root / "meta")
    unlisted = 0
    for index, row in enumerate(rows):
        try:
            case_num = int(row["case_num"] or "")
        except ValueError:
            raise ValueError(
                f"{root / 'meta' / 'meta.csv'} row {index + 2}: case_num "
                f"{row['case_num']!r} is not an integer."
            ) from None
        case_id = case_id_for(case_num)
        split = official.get(index)
        if split is None:
            unlisted += bool(official)
            split = hash_split(case_id)

        images = [("dermoscopic", row["derm"])]
        if row["clinic"] and row["clinic"] != row["derm"]:
            images.append(("clinical", row["clinic"]))
        keys = {m: safe_key(f"{case_id}_{m}") for m, _ in images}
        for modality, rel_path in images:
            meta = _case_meta(row, case_id, split)
            meta.update(modality=modality, image=f"images/{rel_path}")
            meta["paired_keys"] = [k for m, k in keys.items() if m != modality]
            yield ImageRecord(
                key=keys[modality],
                image_path=root / "images" / (rel_path or ""),
                captions=build_captions(row, modality),
                meta=meta,
            )
    if unlisted:
        logger.warning("%d atlas cases are in no official split file; split by hash", unlisted)
