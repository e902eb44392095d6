"""Concept scores and the linear probe on hand-made embeddings whose answers are known."""

import pytest
import torch
import torch.nn.functional as F

from skinclip.eval.concepts import CONCEPTS, Concept, concept_auroc, concept_scores
from skinclip.eval.probe import fit_probe


class VeilModel(torch.nn.Module):
    """Text tower stand-in: prompts naming a veil embed on axis 0, other prompts on axis 1."""

    def __init__(self):
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))  # exp -> scale 1

    def encode_text(self, prompts, normalize=True):
        rows = [
            torch.tensor([1.0, 0.0]) if "veil" in p else torch.tensor([0.0, 1.0]) for p in prompts
        ]
        return torch.stack(rows)


class _Tokens(list):
    def to(self, device):
        return self


VEIL = Concept("veil", ("a blue-whitish veil",), "dermoscopic", lambda m: m.get("veil"))


def test_concept_score_is_the_target_probability():
    embeds = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=-1)
    scores = concept_scores(VeilModel(), _Tokens, embeds, [VEIL])
    # Scale 1: softmax([cos target, cos reference]); e.g. row 0 -> sigmoid(1 - 0).
    expected = torch.sigmoid(embeds[:, 0] - embeds[:, 1])
    assert torch.allclose(scores[:, 0], expected, atol=1e-6)


def test_concept_auroc_counts_only_annotated_images_of_its_modality():
    scores = torch.tensor([[0.9], [0.2], [0.8], [0.1], [0.95]])
    metas = [
        {"modality": "dermoscopic", "veil": True},
        {"modality": "dermoscopic", "veil": False},
        {"modality": "dermoscopic", "veil": None},  # no annotation: left out
        {"modality": "dermoscopic", "veil": False},
        {"modality": "clinical", "veil": False},  # other modality: left out
    ]
    result = concept_auroc(scores, metas, [VEIL])["veil"]
    assert result["auroc"] == 1.0 and (result["positives"], result["negatives"]) == (1, 2)
    result = concept_auroc(scores, metas[1:2], [VEIL])["veil"]
    assert result["auroc"] is None and result["reason"] == "needs both classes"


def test_seven_point_annotations_read_the_atlas_fields():
    by_name = {c.name: c for c in CONCEPTS}
    assert sum(c.seven_point for c in CONCEPTS) == 7
    meta = {
        "pigment_network": "atypical",
        "blue_whitish_veil": "absent",
        "vascular_structures": "dotted",
        "pigmentation": "localized irregular",
        "regression_structures": "white areas",
        "streaks": "regular",
    }
    read = {name: c.annotate(meta) for name, c in by_name.items() if c.annotate}
    assert read["atypical pigment network"] is True
    assert read["blue-whitish veil"] is False
    assert read["atypical vascular pattern"] is True
    assert read["irregular pigmentation"] is True
    assert read["regression structures"] is True
    assert read["irregular streaks"] is False
    assert read["irregular dots and globules"] is None  # field missing


def test_probe_chooses_c_by_grouped_cv_and_predicts_held_out_points():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    targets = torch.arange(3).repeat_interleave(20)
    embeds = centres[targets] + 0.5 * torch.randn(60, 2, generator=gen)
    groups = [f"case{i // 2}" for i in range(60)]  # two images per case
    probe = fit_probe(embeds, targets, groups, num_classes=4, folds=5)
    assert probe.folds == 5 and probe.cv_balanced_accuracy == pytest.approx(1.0)
    probs = probe.predict_proba(centres)
    assert probs.argmax(1).tolist() == [0, 1, 2]
    assert torch.all(probs[:, 3] == 0)  # class 3 never seen in training
    with pytest.raises(ValueError, match="at least two classes"):
        fit_probe(embeds[:5], torch.zeros(5, dtype=torch.long), groups[:5], 3)


def test_probe_needs_two_cases_per_class():
    embeds = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    with pytest.raises(ValueError, match="two cases of every class"):
        fit_probe(embeds, torch.tensor([0, 0, 1]), ["a", "b", "c"], 2)
    # The message names the class and how to skip the probe.
    with pytest.raises(ValueError, match=r"; melanoma has a single case.*--probe-train ''"):
        fit_probe(
            embeds, torch.tensor([0, 0, 1]), ["a", "b", "c"], 2, class_names=["nevus", "melanoma"]
        )
