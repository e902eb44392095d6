"""Search results, and turning raw FAISS neighbour lists into ranked image or case hits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)

UNITS = ("case", "item")


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        rank: Position in the result list, 1 for the best hit.
        score: Cosine similarity between the query and the matched image.
        case_id: The case the matched image belongs to.
        key: Key of the matched image. With ``unit="case"`` it is the case's best-matching
            image, so a UI can show the view (clinical or dermoscopic) that matched.
        item: A copy of the matched image's metadata row.
    """

    rank: int
    score: float
    case_id: str
    key: str
    item: dict


def check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {list(UNITS)}; got {unit!r}.")


def rank_hits(
    scores: np.ndarray, ids: np.ndarray, items: Sequence[dict], k: int, unit: str
) -> list[Hit]:
    """Turn one query's neighbours, best first, into at most ``k`` hits.

    With ``unit="case"`` only the first (best-scoring) image of each case is kept, so a case
    with several images ranks by its best image and appears once.

    Args:
        scores: (F,) similarities, in descending order.
        ids: (F,) row ids into ``items``; negative ids (FAISS padding) are skipped.
        items: Metadata rows of the index.
        k: Maximum number of hits.
        unit: ``"case"`` or ``"item"``.

    Returns:
        Hits ranked from 1.
    """
    hits: list[Hit] = []
    seen_cases: set[str] = set()
    for score, row in zip(scores.tolist(), ids.tolist(), strict=True):
        if len(hits) == k:
            break
        if row < 0:
            continue
        item = items[row]
        case_id = item["case_id"]
        if unit == "case":
            if case_id in seen_cases:
                continue
            seen_cases.add(case_id)
        hits.append(Hit(len(hits) + 1, float(score), case_id, item["key"], dict(item)))
    return hits


def merge_hits(
    hit_lists: Iterable[list[Hit]], k: int, unit: str, exclude_case: str | None = None
) -> list[Hit]:
    """Merge several queries' hits into one ranking by each unit's best score.

    Used when a case with several images is itself the query: a candidate's score is its best
    match against any of the query images.

    Args:
        hit_lists: Hit lists from `rank_hits`, one per query vector.
        k: Maximum number of hits to keep.
        unit: ``"case"`` merges by ``case_id``, ``"item"`` by ``key``.
        exclude_case: A case whose images are dropped from the result.

    Returns:
        At most ``k`` hits, best first, re-ranked from 1.
    """
    best: dict[str, Hit] = {}
    for hits in hit_lists:
        for hit in hits:
            if hit.case_id == exclude_case:
                continue
            name = hit.case_id if unit == "case" else hit.key
            if name not in best or hit.score > best[name].score:
                best[name] = hit
    ranked = sorted(best.values(), key=lambda hit: -hit.score)[:k]
    return [replace(hit, rank=rank) for rank, hit in enumerate(ranked, start=1)]
