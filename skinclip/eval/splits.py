"""Embedded, labelled splits: what every evaluation method consumes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skinclip.encode import encode_split, iter_image_embeds
from skinclip.eval.inputs import Benchmark
from skinclip.labels import LabelSet
from skinclip.model.towers import SkinCLIPBundle

logger = logging.getLogger(__name__)

# Metadata fields of atlas shards that can name an image's class, most specific first.
_ATLAS_LABEL_FIELDS = ("diagnosis", "diagnosis_group", "label")


@dataclass
class LabelledSplit:
    """Image embeddings with their class indices and metadata, row-aligned.

    Attributes:
        name: Split or file name, for reports.
        embeds: (N, D) normalised image embeddings.
        targets: (N,) class indices in the label set.
        metas: Per-image metadata (``modality`` is used to choose prompt templates).
        summary: What the input held and what was left out, for the report.
    """

    name: str
    embeds: torch.Tensor
    targets: torch.Tensor
    metas: list[dict]
    summary: dict = field(default_factory=dict)
    # Every encoded image, labelled or not: concepts are scored on all of them.
    all_embeds: torch.Tensor | None = None
    all_metas: list[dict] | None = None

    def concept_pool(self) -> tuple[torch.Tensor, list[dict]]:
        if self.all_embeds is None or self.all_metas is None:
            return self.embeds, self.metas
        return self.all_embeds, self.all_metas

    @property
    def modalities(self) -> list[str | None]:
        return [m.get("modality") for m in self.metas]

    @property
    def groups(self) -> list[str]:
        """Case id per image (the image's own key when there is none)."""
        return [str(m.get("case_id") or m.get("key") or i) for i, m in enumerate(self.metas)]


def atlas_target(meta: dict, label_set: LabelSet) -> int | None:
    """Class of an atlas image: the first of diagnosis, diagnosis group and label that the
    label set knows (so ``atlas`` scores fine diagnoses and ``atlas4`` their groups)."""
    for name in _ATLAS_LABEL_FIELDS:
        value = meta.get(name)
        if value:
            index = label_set.index(str(value))
            if index is not None:
                return index
    return None


def from_shards(
    bundle: SkinCLIPBundle,
    shards: Path,
    split: str,
    label_set: LabelSet,
    num_workers: int = 2,
) -> LabelledSplit:
    """Encode one shard split and keep the images whose class is in the label set."""
    encoded = encode_split(bundle, shards, split, num_workers=num_workers)
    rows, targets = [], []
    for i, meta in enumerate(encoded.metas):
        target = atlas_target(meta, label_set)
        if target is not None:
            rows.append(i)
            targets.append(target)
    summary = {
        "name": f"{Path(shards).name}/{split}",
        "rows": len(encoded.metas),
        "evaluated": len(rows),
        "coverage": len(rows) / len(encoded.metas) if encoded.metas else 0.0,
        "left_out": {f"label not in label set {label_set.name!r}": len(encoded.metas) - len(rows)},
    }
    if not rows:
        raise ValueError(
            f"No image of split {split!r} in {shards} has a class of label set "
            f"{label_set.name!r}; pick a label set that names the shards' diagnoses."
        )
    index = torch.tensor(rows)
    return LabelledSplit(
        split,
        encoded.image_embeds[index],
        torch.tensor(targets),
        [encoded.metas[i] for i in rows],
        summary,
        all_embeds=encoded.image_embeds,
        all_metas=encoded.metas,
    )


def from_benchmark(
    bundle: SkinCLIPBundle,
    bench: Benchmark,
    modality: str | None,
    batch_size: int = 64,
    num_workers: int = 2,
) -> LabelledSplit:
    """Encode a benchmark's images; unreadable files are left out and counted."""
    embeds, keep = [], []
    for batch_embeds, paths, errors in iter_image_embeds(
        bundle, bench.paths, batch_size=batch_size, num_workers=num_workers
    ):
        if len(batch_embeds):
            embeds.append(batch_embeds)
        for path, error in zip(paths, errors, strict=True):
            if error:
                bench.leave_out("unreadable image", f"{path}: {error}")
            keep.append(not error)
    bench.log_gaps()
    rows = [i for i, ok in enumerate(keep) if ok]
    if not rows:
        missing = bench.left_out.get("image file missing", 0)
        hint = (
            "Check --image-root (image paths resolve against it)."
            if missing
            else "Check --labels: the label set must name the input's classes."
        )
        raise ValueError(
            f"None of the {bench.rows} row(s) of {bench.name} could be evaluated: "
            f"{bench.left_out or 'the input has no rows'}. {hint}"
        )
    metas = [
        {**bench.metas[i], "modality": bench.metas[i].get("modality") or modality} for i in rows
    ]
    for i, meta in zip(rows, metas, strict=True):
        meta.setdefault("key", str(bench.paths[i]))
    targets = torch.tensor([bench.targets[i] for i in rows])
    bench.paths = [bench.paths[i] for i in rows]
    bench.targets = targets.tolist()
    bench.metas = metas
    return LabelledSplit(bench.name, torch.cat(embeds), targets, metas, bench.summary())
