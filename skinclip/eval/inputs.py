"""Labelled benchmark inputs: MM-Skin classification CSVs, ``image,label`` CSVs, folder trees.

Each reader resolves image paths against a root the user gives and returns a
:class:`Benchmark`: the images that exist with a label of the label set, plus an account of
every row left out (missing file, no label, label outside the set) so a report can state its
coverage.

Multi-label rows (MM-Skin's ``categories`` may list several) are resolved by one fixed rule:
the first listed category that is a class of the label set is the label. The rule is
deterministic and the number of rows it applied to is reported.
"""

from __future__ import annotations

import ast
import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from skinclip.data.records import read_text
from skinclip.data.sources import IMAGE_SUFFIXES
from skinclip.labels import LabelSet

logger = logging.getLogger(__name__)

# How many offending paths or labels a report lists before it only counts.
EXAMPLES = 5


@dataclass
class Benchmark:
    """Images to evaluate, row-aligned, and what was left out.

    Attributes:
        name: Shown in reports (the file or folder name).
        paths: Image files that exist.
        targets: Class index in the label set for each path.
        metas: Per image, the input row's other columns (for subgroup metrics).
        rows: Rows (or files) the input held.
        left_out: Reason -> count of rows not evaluated.
        examples: Reason -> the first few offending paths or labels.
        multi_label: Rows with more than one category, resolved by the first-listed rule.
    """

    name: str
    paths: list[Path] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    metas: list[dict] = field(default_factory=list)
    rows: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    multi_label: int = 0

    def leave_out(self, reason: str, example: str) -> None:
        self.left_out[reason] = self.left_out.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def add(self, path: Path, target: int, meta: dict) -> None:
        self.paths.append(path)
        self.targets.append(target)
        self.metas.append(meta)

    @property
    def coverage(self) -> float:
        return len(self.paths) / self.rows if self.rows else 0.0

    def summary(self) -> dict:
        return {
            "name": self.name,
            "rows": self.rows,
            "evaluated": len(self.paths),
            "coverage": self.coverage,
            "left_out": dict(self.left_out),
            "examples": {k: list(v) for k, v in self.examples.items()},
            "multi_label_rows": self.multi_label,
            "multi_label_rule": "first listed category that is a class of the label set",
        }

    def log_gaps(self) -> None:
        for reason, count in self.left_out.items():
            logger.warning(
                "%s: %d row(s) left out (%s), e.g. %s",
                self.name,
                count,
                reason,
                ", ".join(self.examples.get(reason, [])),
            )


def parse_categories(cell: str) -> list[str]:
    """Read MM-Skin's ``categories`` cell, a Python list literal such as ``"['Nevus']"``.

    A cell that is not a list literal is taken as one plain label.
    """
    text = (cell or "").strip()
    if not text.startswith("["):
        return [text] if text else []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"unreadable categories cell {cell!r}; expected e.g. ['Nevus']") from None
    if not isinstance(value, list | tuple):
        value = [value]
    return [str(v).strip() for v in value if str(v).strip()]


def _resolve(labels: list[str], label_set: LabelSet) -> int | None:
    for label in labels:
        index = label_set.index(label)
        if index is not None:
            return index
    return None


def read_table(
    path: Path, label_set: LabelSet, image_root: Path | None = None, label_from: str = "column"
) -> Benchmark:
    """Read an MM-Skin classification CSV (``image,atributes,categories``) or an
    ``image,label`` CSV.

    Args:
        path: The CSV.
        label_set: Classes to evaluate against; rows labelled outside it are left out.
        image_root: Folder the ``image`` paths resolve against (default: the CSV's folder).
        label_from: ``"column"`` reads ``categories`` or ``label``; ``"folder"`` takes the
            image's parent folder name (Patch16's tissue types live there).

    Raises:
        FileNotFoundError: If the CSV does not exist.
        ValueError: If the CSV lacks the ``image`` column or a label column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Benchmark file not found: {path}")
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    columns = reader.fieldnames or []
    label_column = next((c for c in ("categories", "label") if c in columns), None)
    if "image" not in columns or (label_from == "column" and label_column is None):
        raise ValueError(
            f"{path} has columns {columns}; a benchmark CSV needs 'image' plus 'categories' "
            "(MM-Skin format, e.g. ['Nevus']) or 'label'."
        )
    root = Path(image_root) if image_root else path.parent
    bench = Benchmark(name=path.name)
    for row in reader:
        bench.rows += 1
        image = (row.get("image") or "").strip()
        if label_from == "folder":
            labels = [Path(image).parent.name]
        elif label_column == "categories":
            try:
                labels = parse_categories(row.get("categories") or "")
            except ValueError as err:
                bench.leave_out("unreadable categories cell", f"{image}: {err}")
                continue
        else:
            labels = [(row.get("label") or "").strip()] if (row.get("label") or "").strip() else []
        _add_row(bench, root / image, labels, label_set, _meta(row, label_column))
    return bench


def _meta(row: dict, label_column: str | None) -> dict:
    skip = {"image", label_column, "atributes", "attributes"}
    return {k: v for k, v in row.items() if k not in skip and k is not None}


def _add_row(
    bench: Benchmark, image: Path, labels: list[str], label_set: LabelSet, meta: dict
) -> None:
    if not labels:
        bench.leave_out("no label", str(image))
        return
    target = _resolve(labels, label_set)
    if target is None:
        bench.leave_out(f"label not in label set {label_set.name!r}", "; ".join(labels))
        return
    if not image.is_file():
        bench.leave_out("image file missing", str(image))
        return
    bench.multi_label += len(labels) > 1
    bench.add(image, target, meta)


def read_folder_tree(root: Path, label_set: LabelSet) -> Benchmark:
    """Read ``root/<label>/**/<image>``: the first-level folder name is the label."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Benchmark folder not found: {root}")
    bench = Benchmark(name=root.name)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(folder.rglob("*")):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                bench.rows += 1
                _add_row(bench, image, [folder.name], label_set, {"folder": folder.name})
    if bench.rows == 0:
        raise ValueError(
            f"{root} holds no images in <label>/ subfolders; a benchmark folder looks like "
            f"{root}/nevus/img1.jpg."
        )
    return bench


def read_benchmark(
    source: Path, label_set: LabelSet, image_root: Path | None = None, label_from: str = "column"
) -> Benchmark:
    """A CSV file or a folder tree, by what ``source`` is."""
    source = Path(source)
    if source.is_dir():
        return read_folder_tree(source, label_set)
    return read_table(source, label_set, image_root, label_from)
