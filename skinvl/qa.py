"""Question/answer pairs generated from an atlas image's annotations.

Every answer is read from the case's own fields (diagnosis, modality, body site, elevation,
the seven-point criteria, management); a field that is missing yields no question. Each kind
of question has several phrasings, the first being the canonical one used for evaluation.
Closed questions (a fixed answer set, such as present/absent) are marked, so evaluation can
score them by exact match.

Dermoscopic criteria are asked only of the dermoscopic image, since they were read on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from skinclip.data.atlas import diagnosis_group
from skinclip.data.captions import (
    CRITERIA,
    FINDING_NOUN,
    build_captions,
    diagnosis_phrase,
    field_value,
    site_phrase,
)

# How questions name each seven-point criterion: the caption nouns, except that "vessels"
# would not read as a singular subject ("Is vessels present?").
_CRITERION_NAMES = {**FINDING_NOUN, "vascular_structures": "vascular structures"}

PHRASINGS: dict[str, tuple[str, ...]] = {
    "diagnosis": (
        "What is the diagnosis?",
        "Which skin lesion is shown in this image?",
        "What is the most likely diagnosis of this lesion?",
    ),
    "diagnosis_group": (
        "Is this lesion a melanoma, a nevus, a seborrheic keratosis or a basal cell carcinoma?",
        "Which of melanoma, nevus, seborrheic keratosis and basal cell carcinoma is this?",
    ),
    "modality": (
        "Is this a clinical photograph or a dermoscopic image?",
        "What kind of image is this: clinical or dermoscopic?",
    ),
    "site": ("Where on the body is this lesion?", "What is the body site of the lesion?"),
    "elevation": (
        "Is the lesion flat, palpable or nodular?",
        "How raised is this lesion: flat, palpable or nodular?",
    ),
    "management": (
        "What management was chosen for this lesion?",
        "Was the lesion excised, followed up, or not examined further?",
    ),
    "presence": ("Is {} present?", "Does the lesion show {}?", "Can you see {} in this image?"),
    "type": ("What type of {} is seen?", "How would you describe the {} of this lesion?"),
    "describe": ("Describe this lesion.", "What do you see in this image?"),
}


@dataclass(frozen=True)
class QAPair:
    """One question about an image and its answer.

    Attributes:
        kind: The kind of question (a key of :data:`PHRASINGS`, or ``presence:<field>`` /
            ``type:<field>`` for a seven-point criterion).
        question: The question text.
        answer: The answer, taken from the case's fields.
        closed: Whether the answer comes from a fixed set and is scored by exact match.
        phrasing: Index of the phrasing used (0 is canonical).
    """

    kind: str
    question: str
    answer: str
    closed: bool
    phrasing: int = 0


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _questions(meta: Mapping[str, object], modality: str) -> list[tuple[str, str, str, bool]]:
    """(kind, phrasing key, answer, closed) for every question the fields can answer."""
    out = []
    diagnosis = field_value(meta, "diagnosis")
    if diagnosis:
        out.append(("diagnosis", "diagnosis", _sentence(diagnosis_phrase(diagnosis)), False))
        group = diagnosis_group(diagnosis)
        if group:
            out.append(("diagnosis_group", "diagnosis_group", group, True))
    out.append(
        ("modality", "modality", "clinical" if modality == "clinical" else "dermoscopic", True)
    )
    site = site_phrase(field_value(meta, "location"))
    if site:
        out.append(("site", "site", _sentence(site), False))
    elevation = field_value(meta, "elevation")
    if elevation:
        out.append(("elevation", "elevation", elevation.lower(), True))
    management = field_value(meta, "management")
    if management:
        out.append(("management", "management", _sentence(management), False))
    if modality == "dermoscopic":
        for field in CRITERIA:
            raw = meta.get(field)
            if raw is None:
                continue  # not annotated: no question rather than a guessed "no"
            value = field_value(meta, field)
            out.append((f"presence:{field}", "presence", "yes" if value else "no", True))
            if value and field != "blue_whitish_veil":  # the veil has no types
                out.append((f"type:{field}", "type", value.lower(), False))
    return out


def qa_pairs(
    meta: Mapping[str, object], modality: str, all_phrasings: bool = False
) -> list[QAPair]:
    """Question/answer pairs for one atlas image.

    Args:
        meta: The image's metadata as the shards store it (the case's ``meta.csv`` fields).
        modality: ``"dermoscopic"`` or ``"clinical"``.
        all_phrasings: One pair per phrasing of each question (for training) instead of the
            canonical phrasing only (for evaluation).

    Returns:
        The pairs, in a fixed order.
    """
    pairs = []
    for kind, key, answer, closed in _questions(meta, modality):
        name = _CRITERION_NAMES.get(kind.partition(":")[2], "")
        phrasings = PHRASINGS[key] if all_phrasings else PHRASINGS[key][:1]
        for i, phrasing in enumerate(phrasings):
            pairs.append(QAPair(kind, phrasing.format(name), answer, closed, i))
    captions = build_captions(meta, modality) if field_value(meta, "diagnosis") else ()
    if captions:
        phrasings = PHRASINGS["describe"] if all_phrasings else PHRASINGS["describe"][:1]
        for i, phrasing in enumerate(phrasings):
            pairs.append(QAPair("describe", phrasing, captions[0], False, i))
    return pairs
