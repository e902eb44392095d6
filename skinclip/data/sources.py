"""Readers that turn dermatology data layouts into ``ImageRecord`` streams.

Known layouts: the derm7pt atlas folder, the MM-Skin VQA CSV (``image,question,answer``),
caption/label tables (CSV or JSONL with ``image`` plus ``caption``, ``text`` or ``label``),
LLaVA conversation JSON, and a folder of ``<label>/`` subfolders of images.

Rows are grouped by image, so one image is one record whose captions are all its texts. A row
with no usable text still yields a record with no captions; the shard writer reports it as
skipped rather than the reader dropping it silently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from skinclip.data.atlas import read_atlas
from skinclip.data.records import (
    MODALITIES,
    SPLITS,
    ImageRecord,
    normalize_modality,
    normalize_split,
    read_text,
    safe_key,
)
from skinclip.data.splits import hash_split

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CAPTION_COLUMNS = ("caption", "text")
# Optional columns copied into meta when present.
_META_COLUMNS = ("diagnosis", "location", "sex", "label")

LAYOUTS = {
    "derm7pt": "a derm7pt folder holding meta/meta.csv and images/",
    "mmskin_vqa": "an MM-Skin VQA .csv with the columns image,question,answer",
    "csv": "a .csv with an 'image' column plus 'caption', 'text' and/or 'label'",
    "jsonl": "a .jsonl file, one object per line with 'image' plus 'caption', 'text' or 'label'",
    "llava": "a LLaVA .json list of {id, image, conversations: [{from, value}, ...]}",
    "folder": "a folder of <label>/ subfolders holding image files",
}


@dataclass(frozen=True)
class SourceOptions:
    """Options shared by the table and folder readers.

    Attributes:
        image_root: Folder that relative image paths resolve against (default: the file's
            folder, or the root itself for an image folder).
        source: Name stored as meta ``source`` and used as key prefix (default: per reader).
        default_modality: Modality for rows without a valid ``modality`` column; may be None.
        val_fraction: Share of cases hashed into ``val`` when there is no ``split`` column.
        test_fraction: Share of cases hashed into ``test`` when there is no ``split`` column.
    """

    image_root: Path | None = None
    source: str | None = None
    default_modality: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.default_modality is not None and self.default_modality not in MODALITIES:
            raise ValueError(
                f"default_modality {self.default_modality!r} is not one of {list(MODALITIES)}."
            )


def _options(opts: dict) -> SourceOptions:
    try:
        return SourceOptions(**opts)
    except TypeError:
        valid = [f.name for f in fields(SourceOptions)]
        raise ValueError(f"Unknown reader options {sorted(opts)}; valid ones: {valid}.") from None


def label_caption(label: str, modality: str | None = None) -> str:
    """Caption for an image known only by its label, e.g. ``"a dermoscopic image of nevus"``."""
    label = " ".join(str(label).replace("_", " ").split())
    return f"a {modality} image of {label}" if modality else f"an image of {label}"


def _clean(value: object) -> str | None:
    text = "" if value is None else " ".join(str(value).split())
    return text or None


def _records(
    rows: Iterable[tuple[int, dict]],
    path: Path,
    opts: SourceOptions,
    default_source: str,
) -> Iterator[ImageRecord]:
    """Group parsed rows by image and build one record per image.

    Each row dict holds ``image`` and ``captions`` (list), and optionally ``case_id``,
    ``split``, ``modality``, the ``_META_COLUMNS`` and ``extra`` (dict of list-valued meta).
    """
    source = opts.source or default_source
    image_root = Path(opts.image_root) if opts.image_root is not None else path.parent
    default = opts.default_modality
    groups: dict[str, dict] = {}
    bad_modality = 0
    for line, row in rows:
        image = _clean(row.get("image"))
        if image is None:
            raise ValueError(f"{path} row {line}: empty 'image' value; every row needs an image.")
        split_raw = _clean(row.get("split"))
        split = normalize_split(split_raw)
        if split_raw and split is None:
            raise ValueError(
                f"{path} row {line}: split {split_raw!r} is not one of {list(SPLITS)} "
                "(or 'valid'); fix the value or drop the column to split by hash."
            )
        modality_raw = _clean(row.get("modality"))
        modality = normalize_modality(modality_raw) or default
        bad_modality += bool(modality_raw and normalize_modality(modality_raw) is None)

        group = groups.get(image)
        if group is None:
            case_id = _clean(row.get("case_id")) or image
            group = groups[image] = {
                "captions": [],
                "extra": {},
                "meta": {
                    "case_id": case_id,
                    "modality": modality,
                    **{c: _clean(row.get(c)) for c in _META_COLUMNS},
                    "source": source,
                    "split": split or hash_split(case_id, opts.val_fraction, opts.test_fraction),
                    "image": image,
                },
            }
        for caption in row.get("captions", []):
            caption = _clean(caption)
            if caption and caption not in group["captions"]:
                group["captions"].append(caption)
        for name, value in row.get("extra", {}).items():
            group["extra"].setdefault(name, []).append(value)
    if bad_modality:
        logger.warning(
            "%s: %d rows have a modality outside %s; used default_modality=%r",
            path,
            bad_modality,
            list(MODALITIES),
            default,
        )
    for image, group in groups.items():
        yield ImageRecord(
            key=safe_key(f"{source}-{image}"),
            image_path=image_root / image,
            captions=tuple(group["captions"]),
            meta={**group["meta"], **group["extra"]},
        )


def _read_csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    return list(reader.fieldnames or []), list(reader)


def _check_columns(path: Path, found: list[str], required: tuple, any_of: tuple = ()) -> None:
    missing = [c for c in required if c not in found]
    if missing or (any_of and not set(any_of) & set(found)):
        expected = list(required) + ([" or ".join(any_of)] if any_of else [])
        raise ValueError(
            f"{path} has the columns {found}; expected {expected}. "
            f"Rename the columns or pass kind= for another layout ({', '.join(LAYOUTS)})."
        )


def _row_captions(row: dict, modality: str | None) -> list[str]:
    captions = [row.get(c) for c in CAPTION_COLUMNS if _clean(row.get(c))]
    if not captions and _clean(row.get("label")):
        captions = [
            label_caption(row["label"], normalize_modality(row.get("modality")) or modality)
        ]
    return captions


def read_mmskin_vqa(path: Path, **opts) -> Iterator[ImageRecord]:
    """Read an MM-Skin VQA CSV: each image becomes one record whose captions are its answers.

    Args:
        path: CSV with the columns ``image,question,answer``.
        **opts: Fields of ``SourceOptions``.

    Returns:
        Records with meta ``qa``: the list of ``{"question", "answer"}`` pairs of the image.
    """
    path, options = Path(path), _options(opts)
    columns, rows = _read_csv_rows(path)
    _check_columns(path, columns, ("image", "question", "answer"))
    parsed = (
        (i + 2, {**r, "captions": [r["answer"]], "extra": {"qa": _qa(r["question"], r["answer"])}})
        for i, r in enumerate(rows)
    )
    return _records(parsed, path, options, "mmskin_vqa")


def _qa(question: str | None, answer: str | None) -> dict:
    return {"question": _clean(question), "answer": _clean(answer)}


def read_caption_csv(path: Path, **opts) -> Iterator[ImageRecord]:
    """Read a CSV with ``image`` plus ``caption``, ``text`` and/or ``label``.

    A row without a caption but with a label gets the caption ``"an image of <label>"``.
    Optional columns ``case_id``, ``split``, ``modality``, ``diagnosis``, ``location``, ``sex``
    are used when present.

    Args:
        path: The CSV file.
        **opts: Fields of ``SourceOptions``.
    """
    path, options = Path(path), _options(opts)
    columns, rows = _read_csv_rows(path)
    _check_columns(path, columns, ("image",), (*CAPTION_COLUMNS, "label"))
    default = options.default_modality
    parsed = ((i + 2, {**r, "captions": _row_captions(r, default)}) for i, r in enumerate(rows))
    return _records(parsed, path, options, path.stem)


def read_jsonl(path: Path, **opts) -> Iterator[ImageRecord]:
    """Read a JSONL file of objects with ``image`` plus ``caption``, ``text`` or ``label``.

    Args:
        path: The ``.jsonl`` file; the same optional fields as ``read_caption_csv`` apply.
        **opts: Fields of ``SourceOptions``.
    """
    path, options = Path(path), _options(opts)
    parsed = []
    for line_no, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {line_no}: not valid JSON ({err}).") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path} line {line_no}: expected a JSON object, got {obj!r}.")
        _check_columns(path, list(obj), ("image",), (*CAPTION_COLUMNS, "label"))
        captions = _row_captions(obj, options.default_modality)
        parsed.append((line_no, {**obj, "captions": captions}))
    return _records(parsed, path, options, path.stem)


def read_llava(path: Path, **opts) -> Iterator[ImageRecord]:
    """Read LLaVA conversation JSON; the captions of an image are its assistant (gpt) turns.

    Args:
        path: JSON list of ``{id, image, conversations: [{from, value}, ...]}``.
        **opts: Fields of ``SourceOptions``.

    Returns:
        Records with meta ``conversation_ids`` and ``questions`` (human turns, without the
        ``<image>`` token). Entries without a single image path are logged and left out.
    """
    path, options = Path(path), _options(opts)
    try:
        entries = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); the llava layout is a JSON list of "
            "{id, image, conversations}. Pass the right --kind, or fix the file."
        ) from None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of conversations, got {type(entries)}.")
    parsed, no_image = [], 0
    for i, entry in enumerate(entries):
        image = entry.get("image") if isinstance(entry, dict) else None
        if isinstance(image, list) and len(image) == 1:
            image = image[0]
        if not isinstance(image, str) or not image.strip():
            no_image += 1
            continue
        turns = entry.get("conversations") or []
        answers = [t.get("value") for t in turns if t.get("from") in ("gpt", "assistant")]
        questions = [
            _clean(str(t.get("value", "")).replace("<image>", ""))
            for t in turns
            if t.get("from") in ("human", "user")
        ]
        extra = {"conversation_ids": entry.get("id"), "questions": questions}
        parsed.append((i, {**entry, "image": image, "captions": answers, "extra": extra}))
    if no_image:
        logger.warning("%s: %d entries have no single image path and were left out", path, no_image)
    return _records(parsed, path, options, path.stem)


def read_image_folder(path: Path, **opts) -> Iterator[ImageRecord]:
    """Read a folder tree ``root/<label>/<image>``; captions come from the label.

    Args:
        path: The root folder; image paths are relative to it.
        **opts: Fields of ``SourceOptions`` (``image_root`` is ignored).
    """
    root, options = Path(path), _options({**opts, "image_root": Path(path)})
    rows, ignored = [], 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root)
        if file.suffix.lower() not in IMAGE_SUFFIXES or len(rel.parts) < 2:
            ignored += 1
            continue
        row = {"image": rel.as_posix(), "label": rel.parts[0]}
        rows.append((len(rows), {**row, "captions": _row_captions(row, options.default_modality)}))
    if ignored:
        logger.warning(
            "%s: %d files are not images inside a <label>/ folder; ignored", root, ignored
        )
    return _records(rows, root, options, root.name)


def _read_derm7pt(path: Path, **opts) -> Iterator[ImageRecord]:
    if opts:
        raise ValueError(f"The derm7pt reader takes no options; got {sorted(opts)}.")
    return read_atlas(Path(path))
