"""Label a folder or CSV of new images with zero-shot classification."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import torch

from skinclip.data.records import read_text
from skinclip.data.shards import write_json_atomic
from skinclip.data.sources import IMAGE_SUFFIXES
from skinclip.encode import iter_image_embeds
from skinclip.eval.calibration import Temperature
from skinclip.eval.concepts import CONCEPTS, concept_scores
from skinclip.labels import LabelSet
from skinclip.model.towers import SkinCLIPBundle, model_checksum
from skinclip.zeroshot import build_classifier, classify

logger = logging.getLogger(__name__)


def list_images(source: Path, image_root: Path | None = None) -> list[Path]:
    """Image paths from a folder (searched recursively) or a CSV with an ``image`` column."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.suffix.lower() in IMAGE_SUFFIXES:
        if not source.is_file():
            raise FileNotFoundError(f"Image not found: {source}")
        return [source]  # a single image
    if not source.is_file():
        raise FileNotFoundError(f"Input not found: {source}. Give an image folder or a CSV.")
    reader = csv.DictReader(io.StringIO(read_text(source), newline=""))
    if "image" not in (reader.fieldnames or []):
        raise ValueError(
            f"{source} has columns {reader.fieldnames}; an 'image' column of paths is needed."
        )
    root = Path(image_root) if image_root else source.parent
    paths = []
    for line, row in enumerate(reader, start=2):
        if not (row.get("image") or "").strip():
            raise ValueError(f"{source}, line {line}: the 'image' cell is empty or missing.")
        paths.append(root / row["image"].strip())
    return paths


def _top_k_cells(probs: torch.Tensor, names: list[str], k: int) -> list[list[str]]:
    """Per image: label1, prob1, ..., labelk, probk."""
    top = torch.topk(probs, k, dim=1)  # (B, k)
    return [
        [cell for v, i in zip(values, idx, strict=True) for cell in (names[i], f"{v:.4f}")]
        for values, idx in zip(top.values, top.indices, strict=True)
    ]


def partial_path(out_csv: Path) -> Path:
    """Where rows go while a labeling run is in progress; renamed to ``out_csv`` at the end."""
    return out_csv.with_name(out_csv.name + ".partial")


def settings_path(out_csv: Path) -> Path:
    """The settings of the run that writes ``<out>.partial``, checked before resuming it."""
    return out_csv.with_name(out_csv.name + ".partial.json")


def _resume(
    partial: Path, header: list[str], settings: dict, wanted: set[str], counts: dict
) -> set[str]:
    """Keep the valid rows of an interrupted run and return the images they cover.

    A partial file from a run with other settings is refused. An empty one, or one whose
    header was torn by the kill, is started afresh. Rows cut short, and rows for images not
    in this input, are dropped so the final CSV holds exactly one row per input image.
    """
    saved = partial.with_name(partial.name + ".json")
    try:
        found_settings = json.loads(saved.read_text("utf-8")) if saved.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        found_settings = None
    if found_settings != settings:
        changed = sorted(k for k in settings if (found_settings or {}).get(k) != settings[k])
        what = ", ".join(changed) if found_settings is not None else "no settings file"
        raise ValueError(
            f"{partial} is an interrupted run with other settings ({what}); rerun with the "
            "same options, or delete it to start over."
        )
    with partial.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != header:
        return set()
    kept, done = [header], set()
    for row in rows[1:]:
        if len(row) == len(header) and row[0] in wanted and row[0] not in done:
            kept.append(row)
            done.add(row[0])
            counts["failed" if row[-1] else "labelled"] += 1
            counts["abstained"] += row[-2] == "yes"
    tmp = partial.with_name(partial.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(kept)
    tmp.replace(partial)
    return done


def label_images(
    bundle: SkinCLIPBundle,
    paths: list[Path],
    label_set: LabelSet,
    out_csv: Path,
    k: int = 3,
    modality: str | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    temperature: Temperature | None = None,
    abstain_below: float = 0.0,
) -> dict:
    """Write one CSV row per image: top-k labels with probabilities, or the read error.

    Rows are appended to ``<out>.partial`` batch by batch, so memory stays flat however many
    images there are. A rerun after a kill picks up the partial file and skips the images it
    already holds; the file is renamed to ``out_csv`` once every image has a row.

    Args:
        temperature: A fitted temperature to apply to the probabilities.
        abstain_below: Mark rows whose top probability is below this as abstained.

    Returns:
        Counts: labelled, failed, abstained and resumed (rows kept from an earlier run).
    """
    k = min(k, len(label_set))
    names = label_set.names
    if temperature is not None:
        temperature.check(model_checksum(bundle), label_set)
    classifier = build_classifier(bundle.model, bundle.tokenizer, label_set, modality)
    scale = bundle.model.logit_scale.exp().item()
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out_csv)
    header = ["image", *[f"{c}{i + 1}" for i in range(k) for c in ("label", "prob")]]
    header += ["model_id", "abstained", "error"]
    counts = {"labelled": 0, "failed": 0, "abstained": 0, "resumed": 0}
    settings = {
        "model_checksum": model_checksum(bundle),
        "labels": label_set.fingerprint(),
        "k": k,
        "modality": modality,
        "temperature": temperature.temperature if temperature else None,
        "abstain_below": abstain_below,
    }
    if partial.is_dir():
        raise ValueError(f"{partial} is a folder; remove it or choose another --out.")
    done: set[str] = set()
    if partial.exists():
        done = _resume(partial, header, settings, {str(p) for p in paths}, counts)
        counts["resumed"] = len(done)
        paths = [p for p in paths if str(p) not in done]
        logger.info("Resuming %s: %d image(s) done, %d to go", partial, len(done), len(paths))
    write_json_atomic(settings_path(out_csv), settings)
    with partial.open("a" if done else "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if not done:
            writer.writerow(header)
            f.flush()  # a kill in the first batch must still leave a resumable file
        for embeds, batch_paths, errors in iter_image_embeds(
            bundle, paths, batch_size=batch_size, num_workers=num_workers
        ):
            probs = classify(embeds, classifier, scale) if len(embeds) else torch.empty(0, 1)
            if temperature is not None and len(embeds):
                probs = temperature.apply(probs)
            cells = iter(_top_k_cells(probs, names, k) if len(embeds) else [])
            top = iter(probs.max(dim=1).values.tolist() if len(embeds) else [])
            for path, error in zip(batch_paths, errors, strict=True):
                if error:
                    logger.warning("Skipping %s: %s", path, error)
                    writer.writerow([path, *[""] * (2 * k), bundle.model_id, "", error])
                    counts["failed"] += 1
                    continue
                abstained = next(top) < abstain_below
                counts["abstained"] += abstained
                row = [path, *next(cells), bundle.model_id, "yes" if abstained else "", ""]
                writer.writerow(row)
                counts["labelled"] += 1
            f.flush()  # a kill loses at most the batch in flight
        os.fsync(f.fileno())
    partial.replace(out_csv)
    settings_path(out_csv).unlink(missing_ok=True)
    return counts


def write_concept_scores(
    bundle: SkinCLIPBundle,
    paths: list[Path],
    out_csv: Path,
    modality: str | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
) -> dict:
    """Write one CSV row per image with a score column per concept (see
    :mod:`skinclip.eval.concepts`); ``modality`` keeps only the concepts read on that kind of
    image. Unreadable images get an error row. Written under a temporary name, then renamed.

    Returns:
        Counts of scored and failed images.
    """
    concepts = [c for c in CONCEPTS if modality is None or c.modality == modality]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    counts = {"scored": 0, "failed": 0}
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(c.name for c in concepts), "model_id", "error"])
        for embeds, batch_paths, errors in iter_image_embeds(
            bundle, paths, batch_size=batch_size, num_workers=num_workers
        ):
            scores = iter(
                concept_scores(bundle.model, bundle.tokenizer, embeds, concepts).tolist()
                if len(embeds)
                else []
            )
            for path, error in zip(batch_paths, errors, strict=True):
                if error:
                    writer.writerow([path, *[""] * len(concepts), bundle.model_id, error])
                    counts["failed"] += 1
                else:
                    row = [f"{v:.4f}" for v in next(scores)]
                    writer.writerow([path, *row, bundle.model_id, ""])
                    counts["scored"] += 1
    tmp.replace(out_csv)
    return counts
