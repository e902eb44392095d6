"""Caption phrasings for atlas images, built only from the fields of the case's row.

Every word of a caption is either a field value of the row (reworded so that it reads as
English) or a small fixed template word ("image", "of", "patient", ...). Absent criteria and
missing fields are left out rather than guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

# The seven-point checklist fields of derm7pt, in the order the checklist lists them.
CRITERIA = (
    "pigment_network",
    "streaks",
    "pigmentation",
    "regression_structures",
    "dots_and_globules",
    "blue_whitish_veil",
    "vascular_structures",
)

# Field values that mean "not there"; such fields are never mentioned.
_ABSENT = {"", "absent", "nan", "none", "na", "n/a"}

_DIAGNOSIS_WORDING = {
    "melanoma (in situ)": "melanoma in situ",
    "melanoma (less than 0.76 mm)": "melanoma, less than 0.76 mm thick",
    "melanoma (0.76 to 1.5 mm)": "melanoma, 0.76 to 1.5 mm thick",
    "melanoma (more than 1.5 mm)": "melanoma, more than 1.5 mm thick",
    "reed or spitz nevus": "Reed or Spitz nevus",
    "clark nevus": "Clark nevus",
    "miscellaneous": "miscellaneous lesion",
}

# (bare wording, wording with article) for each atlas body site.
_SITE_WORDING = {
    "head neck": ("head or neck", "the head or neck"),
    "lower limbs": ("lower limb", "a lower limb"),
    "upper limbs": ("upper limb", "an upper limb"),
    "acral": ("acral site", "an acral site"),
    "genital areas": ("genital area", "the genital area"),
    "back": ("back", "the back"),
    "abdomen": ("abdomen", "the abdomen"),
    "chest": ("chest", "the chest"),
    "buttocks": ("buttocks", "the buttocks"),
}

# Criterion field -> {atlas value: finding phrase}. derm7pt's "combinations" under regression
# structures means blue and white areas together.
_FINDING_WORDING = {
    "pigment_network": {
        "typical": "typical pigment network",
        "atypical": "atypical pigment network",
    },
    "streaks": {"regular": "regular streaks", "irregular": "irregular streaks"},
    "pigmentation": {
        "diffuse regular": "diffuse regular pigmentation",
        "diffuse irregular": "diffuse irregular pigmentation",
        "localized regular": "localized regular pigmentation",
        "localized irregular": "localized irregular pigmentation",
    },
    "regression_structures": {
        "blue areas": "regression structures with blue areas",
        "white areas": "regression structures with white areas",
        "combinations": "regression structures with blue and white areas",
    },
    "dots_and_globules": {
        "regular": "regular dots and globules",
        "irregular": "irregular dots and globules",
    },
    "blue_whitish_veil": {"present": "blue-whitish veil"},
    "vascular_structures": {
        "arborizing": "arborizing vessels",
        "comma": "comma vessels",
        "dotted": "dotted vessels",
        "hairpin": "hairpin vessels",
        "linear irregular": "linear irregular vessels",
        "wreath": "wreath vessels",
        "within regression": "vessels within regression",
    },
}

# Used for values outside the atlas vocabulary: "<value> <noun>" keeps the row's own words.
FINDING_NOUN = {
    "pigment_network": "pigment network",
    "streaks": "streaks",
    "pigmentation": "pigmentation",
    "regression_structures": "regression structures",
    "dots_and_globules": "dots and globules",
    "blue_whitish_veil": "blue-whitish veil",
    "vascular_structures": "vessels",
}

_MODALITY_NOUN = {
    "dermoscopic": "dermoscopic image",
    "clinical": "clinical photograph",
    "pathology": "pathology image",
}


def field_value(row: Mapping[str, object], field: str) -> str | None:
    """A field's text with underscores as spaces, or None when it is missing or "absent"."""
    raw = row.get(field)
    if raw is None:
        return None
    text = " ".join(str(raw).replace("_", " ").split())
    return None if text.lower() in _ABSENT else text


def diagnosis_phrase(diagnosis: str) -> str:
    """Reword an atlas diagnosis so it reads well, keeping the atlas's own words.

    Args:
        diagnosis: Diagnosis as written in ``meta.csv``, e.g. ``"melanoma (in situ)"``.

    Returns:
        The caption wording, e.g. ``"melanoma in situ"``; unknown diagnoses pass through.
    """
    text = " ".join(str(diagnosis).split())
    return _DIAGNOSIS_WORDING.get(text.lower(), text)


def site_phrase(location: str | None, article: bool = False) -> str | None:
    """Reword an atlas body site (``"head neck"`` -> ``"head or neck"``).

    Args:
        location: Location as written in ``meta.csv``.
        article: Return the form with an article (``"the head or neck"``).

    Returns:
        The wording, or ``None`` when the location is missing.
    """
    text = field_value({"location": location}, "location")
    if text is None:
        return None
    bare, with_article = _SITE_WORDING.get(text.lower(), (text, text))
    return with_article if article else bare


def finding_phrases(row: Mapping[str, object]) -> list[str]:
    """List the seven-point findings that are present in a row, in checklist order.

    Args:
        row: One ``meta.csv`` row (field name -> value).

    Returns:
        Finding phrases such as ``"atypical pigment network"``; absent criteria are left out.
    """
    phrases = []
    for field in CRITERIA:
        value = field_value(row, field)
        if value is None:
            continue
        phrase = _FINDING_WORDING[field].get(value.lower())
        if phrase is None:
            logger.debug("No wording for %s=%r; using the raw value", field, value)
            phrase = f"{value} {FINDING_NOUN[field]}"
        phrases.append(phrase)
    return phrases


def _join(items: list[str]) -> str:
    # "dots and globules" already holds an "and", so lists containing it need a serial comma.
    if len(items) <= 1:
        return "".join(items)
    last_sep = ", and " if any(" and " in item for item in items) else " and "
    return ", ".join(items[:-1]) + last_sep + items[-1]


def _a(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _sentence(*parts: str | None) -> str:
    """Join the present parts into one capitalised sentence ending in a full stop."""
    words = [p for p in parts if p]
    text = " ".join(words).replace(" ,", ",")
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _dx_mid(dx: str, followed: bool) -> str:
    # "melanoma, less than 0.76 mm thick" is an appositive: close it when more text follows.
    return dx + "," if followed and "," in dx else dx


def _modality_noun(modality: str) -> str:
    if modality not in _MODALITY_NOUN:
        raise ValueError(f"Unknown modality {modality!r}; expected one of {list(_MODALITY_NOUN)}")
    return _MODALITY_NOUN[modality]


def diagnosis_caption(diagnosis: str, modality: str | None) -> str:
    """The diagnosis-only phrasing of :func:`build_captions` ("Clark nevus, dermoscopic image.").

    Args:
        diagnosis: Diagnosis as written in ``meta.csv``.
        modality: ``"dermoscopic"``, ``"clinical"``, ``"pathology"``, or ``None`` when unknown
            (the caption then says only "image").

    Raises:
        ValueError: If ``modality`` is not a known modality.
    """
    if modality is None:
        return _sentence(diagnosis_phrase(diagnosis) + ",", "image")
    return _sentence(diagnosis_phrase(diagnosis) + ",", _modality_noun(modality))


def build_captions(row: Mapping[str, object], modality: str) -> tuple[str, ...]:
    """Build 4-6 caption phrasings for one atlas image from its case's row.

    ``captions[0]`` is the canonical phrasing with every supported part. The others change the
    word order or drop optional parts (site, sex, elevation, findings) but never add anything.
    Dermoscopic findings appear only for the dermoscopic image, as they were read on it.

    Args:
        row: One ``meta.csv`` row (field name -> value).
        modality: ``"dermoscopic"`` or ``"clinical"`` (``"pathology"`` is accepted too).

    Returns:
        Distinct caption strings, canonical first; empty when the row has no diagnosis.

    Raises:
        ValueError: If ``modality`` is not a known modality.
    """
    noun = _modality_noun(modality)
    raw_dx = field_value(row, "diagnosis")
    if raw_dx is None:
        return ()
    dx = diagnosis_phrase(raw_dx)
    adj = noun.split()[0]
    site = site_phrase(field_value(row, "location"), article=True)
    site_bare = site_phrase(field_value(row, "location"))
    sex = field_value(row, "sex")
    elev = field_value(row, "elevation")
    findings = _join(finding_phrases(row)) if modality == "dermoscopic" else ""

    on_site = f"on {site}" if site else None
    of_sex = f"of a {sex} patient" if sex else None
    in_sex = f"in a {sex} patient" if sex else None
    elev_dx = _a(f"{elev} {dx}" if elev else dx)
    templates: list[Callable[[], str | None]] = [
        lambda: _sentence(
            noun,
            "of",
            _dx_mid(elev_dx, bool(on_site or of_sex)),
            on_site,
            of_sex,
            f", showing {findings}" if findings else None,
        ),
        lambda: diagnosis_caption(raw_dx, modality),
        lambda: _sentence(
            f"a {adj} view of",
            _dx_mid(_a(dx), bool(findings)),
            f"with {findings}" if findings else None,
        ),
        lambda: (
            _sentence(_dx_mid(f"{elev} {dx}", bool(on_site)), on_site, ",", noun) if elev else None
        ),
        lambda: (
            _sentence(findings, "seen on dermoscopy of", _dx_mid(_a(dx), bool(in_sex)), in_sex)
            if findings
            else _sentence(noun, "of", _dx_mid(_a(dx), bool(in_sex)), in_sex)
        ),
        lambda: _sentence(f"{sex} patient,", site_bare + ":", dx) if sex and site_bare else None,
    ]
    captions: list[str] = []
    for template in templates:
        caption = template()
        if caption and caption not in captions:
            captions.append(caption)
    return tuple(captions)
