"""Built-in label sets: class name -> synonyms used to build zero-shot prompts."""

from __future__ import annotations

# The four atlas groups used for the headline zero-shot score. Synonyms name the atlas's own
# sub-diagnoses so the prompt for "nevus" covers every nevus type the atlas distinguishes.
ATLAS4: dict[str, list[str]] = {
    "melanoma": ["melanoma", "melanoma in situ", "invasive melanoma"],
    "nevus": [
        "nevus",
        "Clark nevus",
        "Reed or Spitz nevus",
        "dermal nevus",
        "blue nevus",
        "congenital nevus",
        "combined nevus",
        "recurrent nevus",
    ],
    "seborrheic keratosis": ["seborrheic keratosis"],
    "basal cell carcinoma": ["basal cell carcinoma"],
}

LABEL_SETS: dict[str, dict[str, list[str]]] = {"atlas4": ATLAS4}


def get_label_set(name: str) -> dict[str, list[str]]:
    """Return a built-in label set by name.

    Raises:
        ValueError: Listing the valid names when ``name`` is unknown.
    """
    if name not in LABEL_SETS:
        raise ValueError(f"Unknown label set {name!r}. Valid: {', '.join(sorted(LABEL_SETS))}.")
    return LABEL_SETS[name]
