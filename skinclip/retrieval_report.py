"""Retrieval quality on the atlas: how useful similar-case search is, in three numbers.

- image -> case, same-diagnosis precision@k: test images query an index of the training
  cases; the share of the top-k cases that have the query's diagnosis (fine and grouped);
- text -> image recall@k: each test image's canonical caption finds that image among all
  test images;
- clinical -> dermoscopic: a test case's clinical photo queries the test dermoscopic images;
  how often the same case's dermoscopic image is the top hit (and within the top 5).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from index import CaseIndex
from skinclip.data.shards import write_json_atomic
from skinclip.encode import EncodedSplit, encode_split
from skinclip.metrics import retrieval_recall
from skinclip.model.towers import SkinCLIPBundle

logger = logging.getLogger(__name__)

KS = (1, 5, 10)


def diagnosis_precision(index: CaseIndex, test: EncodedSplit, field: str) -> dict[str, float]:
    """Mean share of each query's top-k cases whose ``field`` equals the query's."""
    hits = index.search(test.image_embeds.numpy(), k=max(KS), unit="case")
    result = {}
    for k in KS:
        shares = [
            np.mean([h.item.get(field) == meta.get(field) for h in row[:k]])
            for row, meta in zip(hits, test.metas, strict=True)
        ]
        result[f"P@{k}"] = float(np.mean(shares))
    return result


def cross_modality(test: EncodedSplit) -> dict[str, float]:
    """Rank of the same case's dermoscopic image when its clinical photo is the query."""
    derm = [i for i, m in enumerate(test.metas) if m.get("modality") == "dermoscopic"]
    clin = [i for i, m in enumerate(test.metas) if m.get("modality") == "clinical"]
    derm_case = np.array([test.metas[i]["case_id"] for i in derm])
    pairs = [(i, test.metas[i]["case_id"]) for i in clin if test.metas[i]["case_id"] in derm_case]
    if not pairs:
        return {"queries": 0}
    queries = test.image_embeds[[i for i, _ in pairs]].numpy()
    sims = queries @ test.image_embeds[derm].numpy().T  # (Q, D)
    order = np.argsort(-sims, axis=1)
    ranks = [
        int(np.flatnonzero(derm_case[row] == case)[0])
        for row, (_, case) in zip(order, pairs, strict=True)
    ]
    return {
        "queries": len(pairs),
        "candidates": len(derm),
        "top1": float(np.mean([r == 0 for r in ranks])),
        "top5": float(np.mean([r < 5 for r in ranks])),
        "median_rank": float(np.median(ranks) + 1),
    }


def retrieval_report(bundle: SkinCLIPBundle, shards: Path, num_workers: int = 2) -> dict:
    """The three measures for one model, test split against a training-case index."""
    train = encode_split(bundle, shards, "train", num_workers=num_workers)
    test = encode_split(bundle, shards, "test", num_workers=num_workers)
    items = [
        {"key": m["key"], **{k: m.get(k) for k in ("case_id", "diagnosis", "diagnosis_group")}}
        for m in train.metas
    ]
    index = CaseIndex.build(train.image_embeds.numpy(), items, bundle.model_id)
    recall = retrieval_recall(test.image_embeds, test.text_embeds, KS)
    return {
        "model_id": bundle.model_id,
        "train_images": len(train.metas),
        "test_images": len(test.metas),
        "image_to_case_same_diagnosis": diagnosis_precision(index, test, "diagnosis"),
        "image_to_case_same_group": diagnosis_precision(index, test, "diagnosis_group"),
        "text_to_image": {f"R@{k}": recall[f"text_to_image_R@{k}"] for k in KS},
        "clinical_to_dermoscopic": cross_modality(test),
    }


def write_retrieval_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "retrieval.json", report)
    logger.info("Retrieval report written to %s", out / "retrieval.json")
