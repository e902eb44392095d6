"""Zero-shot classification: class names and prompt templates become classifier weights.

Each class may have several synonyms; its embedding is the mean over synonyms x templates of
the normalised text embeddings, normalised again. Templates are written per modality because
a dermoscopic close-up and a clinical photograph are described differently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from skinclip.labels import LabelSet

logger = logging.getLogger(__name__)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "dermoscopic": (
        "dermoscopic image of {}.",
        "a dermoscopy photo showing {}.",
        "{} seen under the dermatoscope.",
        "epiluminescence microscopy of {}.",
        "close-up dermoscopic view of a skin lesion: {}.",
    ),
    "clinical": (
        "clinical photograph of {}.",
        "a photo of {} on the skin.",
        "{} seen with the naked eye.",
        "a macroscopic picture of a skin lesion: {}.",
        "clinical image showing {}.",
    ),
    "pathology": (
        "histopathology slide of {}.",
        "an H&E stained section showing {}.",
        "microscopic pathology image of {}.",
        "{} under the microscope.",
    ),
}
# Used when the modality of an image is not known.
GENERIC_TEMPLATES: tuple[str, ...] = (
    "an image of {}.",
    "a skin lesion: {}.",
    "{}.",
)


def templates_for(modality: str | None) -> tuple[str, ...]:
    """Return the prompt templates for a modality (``None`` gives modality-free templates)."""
    if modality is None:
        return GENERIC_TEMPLATES
    if modality not in TEMPLATES:
        raise ValueError(
            f"Unknown modality {modality!r}. Valid: {', '.join(TEMPLATES)} (or None for any)."
        )
    return TEMPLATES[modality]


@torch.no_grad()
def build_classifier(
    model: torch.nn.Module,
    tokenizer,
    label_set: LabelSet,
    modality: str | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Embed every class as the mean of its prompts (synonyms x templates, and descriptions).

    Args:
        model: An open_clip model.
        tokenizer: Its tokenizer.
        label_set: The classes, see :class:`skinclip.labels.LabelSet`.
        modality: Chooses the templates (see :data:`TEMPLATES`); ``None`` falls back to the
            label set's own modality, then to modality-free templates.
        device: Device for the text tower.

    Returns:
        Classifier weights of shape (D, C), each column L2-normalised.
    """
    templates = templates_for(modality or label_set.modality)
    columns = []
    for label_class in label_set.classes:
        prompts = label_class.prompts(templates)
        text_embeds = model.encode_text(tokenizer(prompts).to(device), normalize=True)  # (P, D)
        columns.append(F.normalize(text_embeds.mean(dim=0), dim=-1))
    return torch.stack(columns, dim=1)  # (D, C)


def classify(
    image_embeds: torch.Tensor, classifier: torch.Tensor, logit_scale: float | torch.Tensor = 100.0
) -> torch.Tensor:
    """Class probabilities for L2-normalised image embeddings.

    Args:
        image_embeds: (N, D) normalised image embeddings.
        classifier: (D, C) from :func:`build_classifier`.
        logit_scale: Multiplier on cosine similarity (the model's learned ``logit_scale.exp()``).

    Returns:
        (N, C) probabilities.
    """
    if image_embeds.shape[-1] != classifier.shape[0]:
        raise ValueError(
            f"Image embeddings have dim {image_embeds.shape[-1]} but the classifier expects "
            f"{classifier.shape[0]}; they come from different models."
        )
    logits = logit_scale * image_embeds @ classifier  # (N, C)
    return logits.softmax(dim=-1)


@torch.no_grad()
def classify_by_modality(
    model: torch.nn.Module,
    tokenizer,
    image_embeds: torch.Tensor,
    modalities: Sequence[str | None],
    label_set: LabelSet,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Classify each image with the templates of its own modality.

    Returns:
        (N, C) probabilities, rows in the order of ``image_embeds``.
    """
    if len(modalities) != image_embeds.shape[0]:
        raise ValueError(f"Got {len(modalities)} modalities for {image_embeds.shape[0]} images.")
    scale = model.logit_scale.exp().item()
    probs = torch.empty(image_embeds.shape[0], len(label_set))
    for modality in sorted(set(modalities), key=str):
        rows = torch.tensor([i for i, m in enumerate(modalities) if m == modality])
        classifier = build_classifier(model, tokenizer, label_set, modality, device).cpu()
        probs[rows] = classify(image_embeds[rows].cpu(), classifier, scale)
    return probs
