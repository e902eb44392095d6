"""Test-split evaluation of a model: zero-shot diagnosis and caption retrieval."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from skinclip.data.atlas import ATLAS_4CLASS
from skinclip.encode import EncodedSplit, encode_split
from skinclip.eval.classification import balanced_accuracy
from skinclip.labels import get_label_set
from skinclip.metrics import retrieval_recall
from skinclip.model.towers import SkinCLIPBundle
from skinclip.zeroshot import classify_by_modality

logger = logging.getLogger(__name__)


def zeroshot_scores(bundle: SkinCLIPBundle, encoded: EncodedSplit) -> dict:
    """4-class zero-shot balanced accuracy and accuracy over the images in those groups."""
    groups = [m.get("diagnosis_group") for m in encoded.metas]
    rows = [i for i, g in enumerate(groups) if g in ATLAS_4CLASS]
    if not rows:
        raise ValueError(
            "No evaluated image has a diagnosis in the 4-class set "
            f"({', '.join(ATLAS_4CLASS)}); zero-shot accuracy needs labelled atlas shards."
        )
    labels = torch.tensor([ATLAS_4CLASS.index(groups[i]) for i in rows])
    probs = classify_by_modality(
        bundle.model,
        bundle.tokenizer,
        encoded.image_embeds[rows],
        [encoded.metas[i].get("modality") for i in rows],
        get_label_set("atlas4"),
    )
    return {
        "zeroshot_balanced_acc": balanced_accuracy(probs, labels),
        "zeroshot_acc": float((probs.argmax(dim=1) == labels).float().mean()),
        "zeroshot_images": len(rows),
    }


def evaluate_split(
    bundle: SkinCLIPBundle, shards: Path, split: str = "test", num_workers: int = 2, **kwargs
) -> dict:
    """Encode one split and compute the headline metrics.

    Returns:
        A flat dict: ``zeroshot_balanced_acc``, ``zeroshot_acc``, retrieval ``R@k`` in both
        directions, and the counts they were computed over.
    """
    encoded = encode_split(bundle, shards, split, num_workers=num_workers, **kwargs)
    return split_metrics(bundle, encoded, split)


def split_metrics(bundle: SkinCLIPBundle, encoded: EncodedSplit, split: str) -> dict:
    """The metrics of :func:`evaluate_split` for a split that is already encoded."""
    metrics = {"split": split, "images": len(encoded.metas), "model_id": bundle.model_id}
    metrics.update(zeroshot_scores(bundle, encoded))
    metrics.update(retrieval_recall(encoded.image_embeds, encoded.text_embeds))
    return metrics
