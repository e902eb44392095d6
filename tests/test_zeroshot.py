"""Zero-shot classifier construction and prediction on hand-made embeddings."""

import pytest
import torch
import torch.nn.functional as F

from skinclip.labels import LabelSet
from skinclip.zeroshot import build_classifier, classify, templates_for

# Each class word maps to one axis; prompts are embedded by the class word they contain.
AXES = {"melanoma": 0, "nevus": 1, "mole": 2, "keratosis": 3}


class AxisModel(torch.nn.Module):
    """Stand-in text tower: a prompt embeds to the axis of the class word it contains."""

    def encode_text(self, prompts, normalize=True):
        rows = []
        for prompt in prompts:
            vec = torch.zeros(4)
            for word, axis in AXES.items():
                if word in prompt:
                    vec[axis] = 1.0
            rows.append(vec)
        out = torch.stack(rows)
        return F.normalize(out, dim=-1) if normalize else out


def identity_tokenizer(prompts):
    return _Prompts(prompts)


class _Prompts(list):
    def to(self, device):
        return self


def test_classifier_averages_synonyms_and_predicts_known_answer():
    classes = LabelSet.from_mapping("t", {"melanoma": ["melanoma"], "nevus": ["nevus", "mole"]})
    weights = build_classifier(AxisModel(), identity_tokenizer, classes, "dermoscopic")

    assert weights.shape == (4, 2)
    # nevus = mean of the nevus and mole axes, renormalised: 1/sqrt(2) on each.
    expected_nevus = torch.tensor([0.0, 1.0, 1.0, 0.0]) / 2**0.5
    assert torch.allclose(weights[:, 1], expected_nevus, atol=1e-6)

    image_embeds = F.normalize(torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.0, 0.2, 1.0, 0.0]]), dim=-1)
    probs = classify(image_embeds, weights, logit_scale=10.0)
    assert probs.argmax(dim=1).tolist() == [0, 1]
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    # Hand computation of the first row's probability for melanoma.
    cos = image_embeds[0] @ weights
    assert probs[0, 0].item() == pytest.approx(torch.softmax(10.0 * cos, 0)[0].item(), abs=1e-6)


def test_classify_rejects_embeddings_of_another_model():
    with pytest.raises(ValueError, match="different models"):
        classify(torch.zeros(2, 8), torch.zeros(4, 3))


def test_templates_are_per_modality_and_unknown_modality_lists_choices():
    assert templates_for("dermoscopic") != templates_for("clinical")
    assert all("{}" in t for t in templates_for("pathology"))
    with pytest.raises(ValueError, match="dermoscopic, clinical, pathology"):
        templates_for("xray")
