"""Label sets: the classes a zero-shot classifier chooses between, with their wording.

A label set names each class as the benchmark spells it and lists the synonyms (and optional
short descriptions) whose embeddings make up the class. Built-in sets are the MM-Skin
zero-shot benchmarks (YAML files in ``skinclip/label_sets``) and the atlas diagnoses; users
give their own as a YAML file or a comma-separated list.

YAML form (a bare ``class: [synonyms]`` mapping is accepted too)::

    name: my-set
    modality: dermoscopic        # optional; chooses the prompt templates
    classes:
      nevus: [melanocytic nevus, mole]
      melanoma:
        synonyms: [melanoma, malignant melanoma]
        descriptions: [asymmetric lesion with several colours]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import yaml

from skinclip.data.atlas import ATLAS_GROUPS
from skinclip.data.captions import diagnosis_phrase
from skinclip.data.records import read_text


@dataclass(frozen=True)
class LabelClass:
    """One class: its name as the data spells it, and the wording that describes it."""

    name: str
    synonyms: tuple[str, ...]
    descriptions: tuple[str, ...] = ()

    def prompts(self, templates: Sequence[str]) -> list[str]:
        """Every synonym in every template, then each description after the first synonym."""
        phrases = [*self.synonyms, *(f"{self.synonyms[0]}, {d}" for d in self.descriptions)]
        return [t.format(p) for p in phrases for t in templates]


@dataclass(frozen=True)
class LabelSet:
    """An ordered set of classes; the order fixes the columns of every probability table."""

    name: str
    classes: tuple[LabelClass, ...]
    modality: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int | None:
        """Position of a data label, matched without regard to case or repeated spaces."""
        return self._lookup.get(_normal(label))

    def fingerprint(self) -> str:
        """A short hash of the classes, their wording and the modality: what a calibration
        fitted on this label set depends on."""
        data = [self.modality, [(c.name, c.synonyms, c.descriptions) for c in self.classes]]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {_normal(c.name): i for i, c in enumerate(self.classes)}

    @classmethod
    def from_mapping(
        cls, name: str, classes: Mapping[str, object], modality: str | None = None
    ) -> LabelSet:
        """Build from ``{class: [synonyms]}`` or ``{class: {synonyms: [...], descriptions:
        [...]}}``; a class without synonyms is described by its own name.

        Raises:
            ValueError: On fewer than two classes, duplicate names or a malformed entry.
        """
        parsed = []
        for key, value in classes.items():
            class_name = str(key).strip()
            if isinstance(value, Mapping):
                unknown = set(value) - {"synonyms", "descriptions"}
                if unknown:
                    raise ValueError(
                        f"Class {class_name!r} of label set {name!r} has unknown keys "
                        f"{sorted(unknown)}; use 'synonyms' and 'descriptions'."
                    )
                synonyms, descriptions = value.get("synonyms"), value.get("descriptions")
            else:
                synonyms, descriptions = value, None
            parsed.append(
                LabelClass(
                    class_name,
                    _strings(synonyms, name, class_name) or (class_name,),
                    _strings(descriptions, name, class_name),
                )
            )
        label_set = cls(name, tuple(parsed), modality)
        if len(label_set._lookup) != len(parsed):
            raise ValueError(f"Label set {name!r} names a class twice: {label_set.names}.")
        if len(parsed) < 2:
            raise ValueError(
                f"Label set {name!r} has {len(parsed)} class(es); a classifier needs at least "
                f"two. Give a comma-separated list, a YAML file, or one of: "
                f"{', '.join(builtin_names())}."
            )
        return label_set


def _normal(label: str) -> str:
    return " ".join(str(label).split()).casefold()


def _strings(value: object, set_name: str, class_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(
            f"Class {class_name!r} of label set {set_name!r}: expected a list of strings, got "
            f"{value!r}."
        )
    return tuple(str(v).strip() for v in value if str(v).strip())


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


def _atlas_fine() -> LabelSet:
    # Every atlas diagnosis as its own class, worded as the captions word it.
    classes = {dx: [diagnosis_phrase(dx)] for dx in ATLAS_GROUPS}
    return LabelSet.from_mapping("atlas", classes)


def _packaged(name: str) -> LabelSet:
    text = resources.files("skinclip.label_sets").joinpath(f"{name}.yaml").read_text("utf-8")
    return _from_yaml_data(yaml.safe_load(text), name)


_BUILTIN = {
    "atlas4": lambda: LabelSet.from_mapping("atlas4", ATLAS4),
    "atlas": _atlas_fine,
    **{
        name: (lambda name=name: _packaged(name))
        for name in (
            "ham10000",
            "isic2019",
            "bcn20000",
            "mskcc",
            "dermnet",
            "fitzpatrick17k",
            "ddi",
            "hiba",
            "patch16",
            "patch16_tissue",
        )
    },
}


def builtin_names() -> list[str]:
    """Names of the built-in label sets."""
    return sorted(_BUILTIN)


def get_label_set(name: str) -> LabelSet:
    """Return a built-in label set by name.

    Raises:
        ValueError: Listing the valid names when ``name`` is unknown.
    """
    if name not in _BUILTIN:
        raise ValueError(f"Unknown label set {name!r}. Built-in sets: {', '.join(_BUILTIN)}.")
    return _BUILTIN[name]()


def _from_yaml_data(data: object, name: str, source: str = "") -> LabelSet:
    where = source or name
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{where} must map class names to synonyms, e.g. 'nevus: [melanocytic nevus, "
            "mole]', or hold a 'classes:' mapping."
        )
    if "classes" in data:
        classes = data["classes"]
        if not isinstance(classes, Mapping):
            raise ValueError(f"{where}: 'classes' must map each class name to its synonyms.")
        modality = data.get("modality")
        if modality not in (None, "clinical", "dermoscopic", "pathology"):
            raise ValueError(
                f"{where}: modality {modality!r} is not one of clinical, dermoscopic, pathology."
            )
        return LabelSet.from_mapping(str(data.get("name") or name), classes, modality)
    return LabelSet.from_mapping(name, data)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a mapping naming the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_label_set(spec: str) -> LabelSet:
    """Read a label set: a built-in name, a YAML file, or a comma-separated list of classes.

    Raises:
        FileNotFoundError: If a YAML path does not exist.
        ValueError: If the file is not valid YAML or has the wrong shape, or fewer than two
            classes result.
    """
    if spec in _BUILTIN:
        return get_label_set(spec)
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"Label file not found: {path}")
        try:
            data = yaml.load(read_text(path), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        return _from_yaml_data(data, path.stem, str(path))
    if len([name for name in spec.split(",") if name.strip()]) == 1:
        raise ValueError(
            f"{spec!r} is not a built-in label set ({', '.join(builtin_names())}), a YAML "
            "file, or a comma-separated list of at least two classes."
        )
    return label_list(spec)


def label_list(spec: str) -> LabelSet:
    """A label set from a comma-separated list of classes; never read as a file name, so it
    is safe for text typed into a web page.

    Raises:
        ValueError: For fewer than two classes or a class named twice.
    """
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if len(names) < 2:
        raise ValueError(f"Give at least two classes, separated by commas; got {spec!r}.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Label list {spec!r} names {duplicates[0]!r} twice.")
    return LabelSet.from_mapping("custom", {name: [] for name in names})
