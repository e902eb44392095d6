"""Retrieval metrics shared by training-time validation and offline evaluation."""

from __future__ import annotations

import torch
from torchmetrics.retrieval import RetrievalRecall


def retrieval_recall(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k in both directions for paired embeddings (row i of each is one pair).

    Args:
        image_embeds: (N, D) normalised image embeddings.
        text_embeds: (N, D) normalised text embeddings of the matching captions.
        ks: Cut-offs.

    Returns:
        ``{"image_to_text_R@k": ..., "text_to_image_R@k": ...}`` for each k.
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(
            f"Paired embeddings must have equal shapes, got {tuple(image_embeds.shape)} "
            f"and {tuple(text_embeds.shape)}."
        )
    n = image_embeds.shape[0]
    scores = image_embeds.float() @ text_embeds.float().T  # (N images, N texts)
    # torchmetrics counts an item as retrieved only if its score is above 0, but cosine
    # similarities are often negative (an untrained model's matching pairs mostly are). One
    # shift of every score keeps each query's ranking and makes them all positive.
    scores = scores - scores.min() + 1.0
    target = torch.eye(n, dtype=torch.bool)
    query_ids = torch.arange(n).unsqueeze(1).expand(n, n)  # (N, N): row = query
    results = {}
    for k in ks:
        recall = RetrievalRecall(top_k=k)
        results[f"image_to_text_R@{k}"] = float(recall(scores, target, indexes=query_ids))
        recall = RetrievalRecall(top_k=k)
        results[f"text_to_image_R@{k}"] = float(recall(scores.T, target, indexes=query_ids))
    return results
