"""Label a folder or CSV of new images with zero-shot classification."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import torch
import yaml

from skinclip.data.records import read_text
from skinclip.data.sources import IMAGE_SUFFIXES
from skinclip.encode import iter_image_embeds
from skinclip.labels import LABEL_SETS, get_label_set
from skinclip.model.towers import SkinCLIPBundle
from skinclip.zeroshot import build_classifier, classify

logger = logging.getLogger(__name__)


def parse_labels(spec: str) -> dict[str, list[str]]:
    """Read a label set: a built-in name, a YAML file (class: [synonyms]) or ``a,b,c``.

    Raises:
        ValueError: If fewer than two classes result or the YAML has the wrong shape.
    """
    if spec in LABEL_SETS:
        return get_label_set(spec)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"Label file not found: {path}")
        try:
            data = yaml.safe_load(read_text(path))
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path} must map each class name to a list of synonyms, e.g. "
                "'nevus: [melanocytic nevus, mole]'."
            )
        classes = {str(k): [str(s) for s in (v or [])] for k, v in data.items()}
    else:
        classes = {name.strip(): [] for name in spec.split(",") if name.strip()}
    if len(classes) < 2:
        raise ValueError(
            f"Label set {spec!r} has {len(classes)} class(es); give at least two, as a "
            f"comma-separated list, a YAML file, or one of: {', '.join(sorted(LABEL_SETS))}."
        )
    return classes


def list_images(source: Path, image_root: Path | None = None) -> list[Path]:
    """Image paths from a folder (searched recursively) or a CSV with an ``image`` column."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not source.is_file():
        raise FileNotFoundError(f"Input not found: {source}. Give an image folder or a CSV.")
    reader = csv.DictReader(io.StringIO(read_text(source), newline=""))
    if "image" not in (reader.fieldnames or []):
        raise ValueError(
            f"{source} has columns {reader.fieldnames}; an 'image' column of paths is needed."
        )
    root = Path(image_root) if image_root else source.parent
    return [root / row["image"] for row in reader]


def _top_k_cells(embeds, classifier, scale: float, names: list[str], k: int) -> list[list[str]]:
    """Per image: label1, prob1, ..., labelk, probk."""
    if embeds.numel() == 0:
        return []
    top = torch.topk(classify(embeds, classifier, scale), k, dim=1)  # (B, k)
    return [
        [cell for v, i in zip(values, idx, strict=True) for cell in (names[i], f"{v:.4f}")]
        for values, idx in zip(top.values, top.indices, strict=True)
    ]


def label_images(
    bundle: SkinCLIPBundle,
    paths: list[Path],
    classes: dict[str, list[str]],
    out_csv: Path,
    k: int = 3,
    modality: str | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
) -> dict:
    """Write one CSV row per image: top-k labels with probabilities, or the read error.

    The CSV is written to a temporary name and renamed when complete.

    Returns:
        Counts of labelled and failed images.
    """
    k = min(k, len(classes))
    names = list(classes)
    classifier = build_classifier(bundle.model, bundle.tokenizer, classes, modality)
    scale = bundle.model.logit_scale.exp().item()
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    header = ["image", *[f"{c}{i + 1}" for i in range(k) for c in ("label", "prob")]]
    counts = {"labelled": 0, "failed": 0}
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "model_id", "error"])
        for embeds, batch_paths, errors in iter_image_embeds(
            bundle, paths, batch_size=batch_size, num_workers=num_workers
        ):
            rows = iter(_top_k_cells(embeds, classifier, scale, names, k))
            for path, error in zip(batch_paths, errors, strict=True):
                if error:
                    logger.warning("Skipping %s: %s", path, error)
                    writer.writerow([path, *[""] * (2 * k), bundle.model_id, error])
                    counts["failed"] += 1
                else:
                    writer.writerow([path, *next(rows), bundle.model_id, ""])
                    counts["labelled"] += 1
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(out_csv)
    return counts
