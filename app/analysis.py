"""What the explorer computes for an image or a query, kept apart from the page so it can be
tested without a browser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from index import CaseIndex, Hit
from skinclip.eval.concepts import CONCEPTS, concept_scores
from skinclip.labels import LabelSet
from skinclip.model.towers import SkinCLIPBundle, as_model_input
from skinclip.retrieval import search_text
from skinclip.zeroshot import build_classifier, classify

MODALITIES = ("dermoscopic", "clinical", "pathology")


@dataclass(frozen=True)
class Diagnosis:
    """Zero-shot result for one image.

    Attributes:
        names: Class names, most probable first.
        probs: Their probabilities, in the same order.
        abstained: True when the top probability is below the threshold.
    """

    names: list[str]
    probs: list[float]
    abstained: bool

    @property
    def top(self) -> str | None:
        return None if self.abstained else self.names[0]


@torch.no_grad()
def embed_image(bundle: SkinCLIPBundle, image: Image.Image) -> torch.Tensor:
    """(D,) normalised embedding of an RGB image, with the model's own preprocessing."""
    pixels = bundle.preprocess_val(image)[None]  # (1, 3, H, W)
    model = bundle.model.eval()
    return model.encode_image(as_model_input(pixels), normalize=True).float()[0]


def zero_shot(
    bundle: SkinCLIPBundle,
    image_embed: torch.Tensor,
    label_set: LabelSet,
    modality: str | None,
    threshold: float = 0.0,
) -> Diagnosis:
    """Class probabilities with the prompt templates of ``modality``; abstain below
    ``threshold``."""
    with torch.no_grad():
        classifier = build_classifier(bundle.model, bundle.tokenizer, label_set, modality)
    scale = bundle.model.logit_scale.exp().item()
    probs = classify(image_embed[None], classifier.float(), scale)[0]
    order = probs.argsort(descending=True).tolist()
    names = [label_set.names[i] for i in order]
    values = [float(probs[i]) for i in order]
    return Diagnosis(names, values, values[0] < threshold)


def concepts_for(bundle: SkinCLIPBundle, image_embed: torch.Tensor, modality: str) -> dict:
    """Concept name -> probability of the finding over a plain reference, for the concepts
    read on this modality."""
    chosen = [c for c in CONCEPTS if c.modality == modality]
    if not chosen:
        return {}
    scores = concept_scores(bundle.model, bundle.tokenizer, image_embed[None], chosen)[0]
    return {c.name: float(s) for c, s in zip(chosen, scores, strict=True)}


def filters(modality: list[str], diagnosis: list[str]) -> dict:
    """A ``where`` for :meth:`CaseIndex.search` from the page's multiselects (empty = all)."""
    where = {}
    if modality:
        where["modality"] = list(modality)
    if diagnosis:
        where["diagnosis"] = list(diagnosis)
    return where


def similar_cases(
    index: CaseIndex, image_embed: torch.Tensor, k: int, where: dict | None = None
) -> list[Hit]:
    """The k indexed cases closest to an image, each shown by its best-matching image."""
    return index.search(image_embed[None].numpy(), k=k, where=where or None)[0]


def text_cases(
    index: CaseIndex, bundle: SkinCLIPBundle, query: str, k: int, where: dict | None = None
) -> list[Hit]:
    """Cases matching a free-text description.

    Raises:
        ValueError: For an empty query.
    """
    return search_text(index, bundle, query, k=k, where=where or None)


def browse_page(index: CaseIndex, where: dict, page: int, per_page: int) -> tuple[list[str], int]:
    """One page of the case ids matching ``where``, and the number of pages."""
    ids = index.matching_cases(where or None)
    pages = max(1, -(-len(ids) // per_page))
    page = min(max(page, 1), pages)
    return ids[(page - 1) * per_page : page * per_page], pages


def answer(skinvl, image: Image.Image, question: str, max_new_tokens: int = 48) -> str:
    """SkinVL's greedy answer to one question about one image.

    Raises:
        ValueError: For an empty question.
    """
    from skinclip.train.transforms import eval_transform
    from skinvl.model import generate

    model, image_size = skinvl
    pixels = eval_transform(image_size)(image)[None]
    return generate(model, pixels, [question], max_new_tokens=max_new_tokens)[0]
