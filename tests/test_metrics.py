"""Metrics against hand-computed values."""

import pytest
import torch

from skinclip.eval.classification import balanced_accuracy
from skinclip.metrics import retrieval_recall


def test_retrieval_recall_hand_computed():
    # Text 2 leans towards image 0: a miss from the text side only.
    image_embeds = torch.eye(3)
    text_embeds = torch.tensor([[0.9, 0.0, 0.1], [0.0, 1.0, 0.0], [0.95, 0.0, 0.3]])
    text_embeds = torch.nn.functional.normalize(text_embeds, dim=-1)
    r = retrieval_recall(image_embeds, text_embeds, ks=(1, 2))
    # image->text: i0 scores t0 0.994 > t2 0.954; i2 scores t2 0.301 > t0 0.110: all hits.
    assert r["image_to_text_R@1"] == pytest.approx(1.0)
    # text->image: t2 scores i0 0.954 > i2 0.301, a miss; t0 and t1 hit.
    assert r["text_to_image_R@1"] == pytest.approx(2 / 3)
    assert r["text_to_image_R@2"] == pytest.approx(1.0)


def test_retrieval_recall_counts_matches_of_negative_similarity():
    # Each image's own caption ranks first although every similarity is negative.
    image_embeds = torch.eye(3)
    text_embeds = torch.nn.functional.normalize(torch.eye(3) * 0.5 - 1.0, dim=-1)
    assert (image_embeds @ text_embeds.T < 0).all()
    r = retrieval_recall(image_embeds, text_embeds, ks=(1,))
    assert r["image_to_text_R@1"] == r["text_to_image_R@1"] == 1.0


def test_retrieval_recall_rejects_unpaired():
    with pytest.raises(ValueError, match="equal shapes"):
        retrieval_recall(torch.zeros(3, 4), torch.zeros(2, 4))


def test_balanced_accuracy_is_mean_recall_of_present_classes():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    targets = torch.tensor([0, 0, 1, 1])
    # Class 0 recall 2/2, class 1 recall 1/2; class 2 never occurs and is left out.
    assert balanced_accuracy(probs, targets) == pytest.approx(0.75)
