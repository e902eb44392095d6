"""Concept scores: how strongly an image shows a dermatological finding.

As in MONET and DermLIP, each concept is scored by contrasting a target prompt ("... with a
blue-whitish veil") against a reference prompt that describes the same kind of image without
the finding. The score is the probability the model gives the target in that two-way
choice, so it is comparable across concepts and needs no training.

The seven-point checklist criteria and a few other findings carry derm7pt's expert
annotations, so their AUROC can be measured on the atlas; clinical descriptors without
annotations are scored but not evaluated.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchmetrics.functional.classification as tmf


def _field(name: str, *values: str) -> Callable[[dict], bool | None]:
    """Annotation from one atlas field: True when it holds one of ``values``."""

    def annotate(meta: dict) -> bool | None:
        value = meta.get(name)
        return None if value in (None, "") else str(value).lower() in values

    return annotate


def _field_present(name: str) -> Callable[[dict], bool | None]:
    def annotate(meta: dict) -> bool | None:
        value = meta.get(name)
        return None if value in (None, "") else str(value).lower() != "absent"

    return annotate


@dataclass(frozen=True)
class Concept:
    """A finding to score.

    Attributes:
        name: Short name used in reports and CSV columns.
        phrases: Wordings of the finding; the target prompt averages over them.
        modality: The kind of image the finding is read on.
        annotate: Reads the expert annotation from an atlas image's metadata (None where the
            atlas has no annotation for it).
        seven_point: Whether it is one of the seven-point checklist criteria.
    """

    name: str
    phrases: tuple[str, ...]
    modality: str
    annotate: Callable[[dict], bool | None] | None = None
    seven_point: bool = False


CONCEPTS: tuple[Concept, ...] = (
    # The seven-point checklist, as derm7pt annotates it.
    Concept(
        "atypical pigment network",
        ("an atypical pigment network", "an irregular, thickened pigment network"),
        "dermoscopic",
        _field("pigment_network", "atypical"),
        True,
    ),
    Concept(
        "blue-whitish veil",
        ("a blue-whitish veil", "a blue-white veil"),
        "dermoscopic",
        _field("blue_whitish_veil", "present"),
        True,
    ),
    Concept(
        "atypical vascular pattern",
        ("irregular linear or dotted vessels", "an atypical vascular pattern"),
        "dermoscopic",
        _field("vascular_structures", "linear irregular", "dotted"),
        True,
    ),
    Concept(
        "irregular streaks",
        ("irregular streaks", "irregular pseudopods"),
        "dermoscopic",
        _field("streaks", "irregular"),
        True,
    ),
    Concept(
        "irregular pigmentation",
        ("irregular pigmentation", "irregular blotches of pigment"),
        "dermoscopic",
        _field("pigmentation", "diffuse irregular", "localized irregular"),
        True,
    ),
    Concept(
        "irregular dots and globules",
        ("irregular dots and globules",),
        "dermoscopic",
        _field("dots_and_globules", "irregular"),
        True,
    ),
    Concept(
        "regression structures",
        ("regression structures", "white scar-like areas and blue peppering"),
        "dermoscopic",
        _field_present("regression_structures"),
        True,
    ),
    # Other annotated dermoscopic findings.
    Concept(
        "typical pigment network",
        ("a typical pigment network", "a regular pigment network"),
        "dermoscopic",
        _field("pigment_network", "typical"),
    ),
    Concept(
        "arborizing vessels",
        ("arborizing vessels", "tree-like branching vessels"),
        "dermoscopic",
        _field("vascular_structures", "arborizing"),
    ),
    # Clinical descriptors; elevation is annotated in the atlas.
    Concept(
        "nodule",
        ("a nodule", "a raised nodular lesion"),
        "clinical",
        _field("elevation", "nodular"),
    ),
    Concept(
        "flat lesion", ("a flat macule", "a flat lesion"), "clinical", _field("elevation", "flat")
    ),
    Concept("ulceration", ("ulceration", "an ulcerated surface"), "clinical"),
    Concept("scale", ("scale", "a scaly surface"), "clinical"),
    Concept("erythema", ("erythema", "redness of the skin"), "clinical"),
    Concept("crust", ("crust", "a crusted surface"), "clinical"),
)

# Prompt frames: the target puts the finding into the frame, the reference leaves it out.
_FRAMES = {
    "dermoscopic": (
        "dermoscopic image of a skin lesion with {}.",
        "dermoscopic image of a skin lesion.",
    ),
    "clinical": (
        "clinical photograph of a skin lesion with {}.",
        "clinical photograph of a skin lesion.",
    ),
    "pathology": ("histopathology image showing {}.", "histopathology image of skin."),
}


def concept_prompts(concept: Concept) -> tuple[list[str], list[str]]:
    """Target prompts (one per phrase) and reference prompts for a concept."""
    if concept.modality not in _FRAMES:
        raise ValueError(
            f"Concept {concept.name!r} has modality {concept.modality!r}; valid: "
            f"{', '.join(_FRAMES)}."
        )
    target, reference = _FRAMES[concept.modality]
    return [target.format(p) for p in concept.phrases], [reference]


@torch.no_grad()
def concept_scores(
    model: torch.nn.Module,
    tokenizer,
    image_embeds: torch.Tensor,
    concepts: Sequence[Concept] = CONCEPTS,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """(N, K) probability of the target over the reference prompt, per image and concept.

    Args:
        model: An open_clip model.
        tokenizer: Its tokenizer.
        image_embeds: (N, D) normalised image embeddings.
        concepts: Concepts to score.
        device: Device for the text tower.
    """
    scale = model.logit_scale.exp().item()
    columns = []
    for concept in concepts:
        targets, references = concept_prompts(concept)
        pair = []
        for prompts in (targets, references):
            embeds = model.encode_text(tokenizer(prompts).to(device), normalize=True)
            pair.append(torch.nn.functional.normalize(embeds.float().mean(0), dim=-1).cpu())
        logits = scale * image_embeds.float() @ torch.stack(pair, dim=1)  # (N, 2)
        columns.append(logits.softmax(dim=1)[:, 0])
    return torch.stack(columns, dim=1) if columns else torch.empty(len(image_embeds), 0)


def concept_auroc(
    scores: torch.Tensor,
    metas: Sequence[dict],
    concepts: Sequence[Concept] = CONCEPTS,
) -> dict[str, dict]:
    """AUROC of each annotated concept over the images of its modality with an annotation.

    Returns:
        Concept name -> ``{"auroc", "positives", "negatives", "seven_point"}``; concepts with
        no annotation, or whose annotated images are all positive or all negative, get an
        AUROC of ``None`` and the reason.
    """
    result = {}
    for k, concept in enumerate(concepts):
        entry: dict = {"seven_point": concept.seven_point, "modality": concept.modality}
        if concept.annotate is None:
            result[concept.name] = {**entry, "auroc": None, "reason": "no expert annotation"}
            continue
        rows, labels = [], []
        for i, meta in enumerate(metas):
            label = concept.annotate(meta) if meta.get("modality") == concept.modality else None
            if label is not None:
                rows.append(i)
                labels.append(int(label))
        positives = sum(labels)
        entry.update(positives=positives, negatives=len(labels) - positives)
        if positives == 0 or positives == len(labels):
            result[concept.name] = {**entry, "auroc": None, "reason": "needs both classes"}
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            auroc = tmf.binary_auroc(scores[rows, k], torch.tensor(labels))
        result[concept.name] = {**entry, "auroc": float(auroc)}
    return result
