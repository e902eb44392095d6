"""Atlas captions: built only from the row's fields, findings only on dermoscopy."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from skinclip.data.atlas import ATLAS_4CLASS, diagnosis_group, read_atlas
from skinclip.data.captions import (
    CRITERIA,
    build_captions,
    diagnosis_caption,
    diagnosis_phrase,
    finding_phrases,
    site_phrase,
)
from skinclip.zeroshot import GENERIC_TEMPLATES, TEMPLATES

# Words a caption may use beyond the row's own field values.
TEMPLATE_WORDS = {
    "a", "an", "the", "of", "on", "in", "with", "and", "or", "showing", "seen", "view",
    "image", "photograph", "dermoscopy", "dermoscopic", "clinical", "patient", "lesion", "site",
}  # fmt: skip
# Words that reword a field, allowed only when that field is present in the row.
FIELD_ALIASES = {
    "vascular_structures": {"vessels"},
    # derm7pt's "combinations" means blue and white regression areas together.
    "regression_structures": {"blue", "white", "areas"},
    "location": {"limb", "area"},
    "diagnosis": {"thick"},
}
CAPTION_FIELDS = ("diagnosis", *CRITERIA, "elevation", "location", "sex")
# Every word that can only come from a seven-point finding.
FINDING_WORDS = {
    "network", "streaks", "pigmentation", "regression", "structures", "dots", "globules",
    "veil", "whitish", "vessels", "arborizing",
}  # fmt: skip


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.lower())


def _allowed_words(row: dict) -> set[str]:
    allowed = set(TEMPLATE_WORDS)
    for field in CAPTION_FIELDS:
        value = row.get(field)
        if value and value != "absent":
            allowed |= set(_words(value)) | set(_words(field.replace("_", " ")))
            allowed |= FIELD_ALIASES.get(field, set())
    return allowed


def _meta_rows(data_root: Path) -> list[dict]:
    with (data_root / "derm7pt" / "meta" / "meta.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_canonical_caption_of_real_rows(data_root: Path):
    rows = _meta_rows(data_root)
    assert build_captions(rows[0], "dermoscopic")[0] == (
        "Dermoscopic image of a nodular basal cell carcinoma on the abdomen of a female "
        "patient, showing arborizing vessels."
    )
    assert build_captions(rows[0], "clinical")[0] == (
        "Clinical photograph of a nodular basal cell carcinoma on the abdomen of a female patient."
    )
    # Case 4: regression "blue areas", irregular dots, veil, vessels within regression.
    canonical = build_captions(rows[3], "dermoscopic")[0]
    for phrase in (
        "on a lower limb",
        "male patient",
        "regression structures with blue areas",
        "irregular dots and globules",
        "blue-whitish veil",
        "vessels within regression",
    ):
        assert phrase in canonical
    for absent in ("pigment network", "streaks", "pigmentation"):
        assert absent not in canonical


def test_real_rows_regression_combinations_and_melanoma_thickness(data_root: Path):
    rows = {r["case_num"]: r for r in _meta_rows(data_root)}
    canonical = build_captions(rows["701"], "dermoscopic")[0]
    assert rows["701"]["diagnosis"] == "melanoma (less than 0.76 mm)"
    assert "melanoma, less than 0.76 mm thick," in canonical
    assert "regression structures with blue and white areas" in canonical
    assert "atypical pigment network" in canonical
    assert "irregular streaks" in canonical


def test_every_real_caption_names_diagnosis_and_respects_modality(data_root: Path):
    for row in _meta_rows(data_root):
        dx = diagnosis_phrase(row["diagnosis"]).lower()
        absent_findings = [c for c in CRITERIA if row[c] == "absent"]
        for modality in ("dermoscopic", "clinical"):
            captions = build_captions(row, modality)
            assert 4 <= len(captions) <= 6, row["case_num"]
            assert len(set(captions)) == len(captions)
            for caption in captions:
                assert dx in caption.lower(), (row["case_num"], caption)
                assert not set(_words(caption)) - _allowed_words(row), caption
                if modality == "clinical":
                    assert not set(_words(caption)) & FINDING_WORDS, caption
                    assert "dermoscop" not in caption.lower()
        derm = " ".join(build_captions(row, "dermoscopic")).lower()
        # An absent criterion contributes none of its words that other criteria lack.
        if "pigment_network" in absent_findings:
            assert "network" not in derm
        if "blue_whitish_veil" in absent_findings:
            assert "veil" not in derm
        if "vascular_structures" in absent_findings:
            assert "vessels" not in derm
        if "streaks" in absent_findings:
            assert "streaks" not in derm


def test_synthetic_row_uses_only_field_and_template_words():
    row = {
        "diagnosis": "blue nevus",
        "pigment_network": "absent",
        "streaks": "regular",
        "pigmentation": "localized irregular",
        "regression_structures": "white areas",
        "dots_and_globules": "absent",
        "blue_whitish_veil": "absent",
        "vascular_structures": "hairpin",
        "elevation": "flat",
        "location": "genital areas",
        "sex": "male",
    }
    derm = build_captions(row, "dermoscopic")
    assert derm[0] == (
        "Dermoscopic image of a flat blue nevus on the genital area of a male patient, showing "
        "regular streaks, localized irregular pigmentation, regression structures with white "
        "areas and hairpin vessels."
    )
    for caption in (*derm, *build_captions(row, "clinical")):
        assert not set(_words(caption)) - _allowed_words(row), caption
        assert "veil" not in caption and "network" not in caption and "dots" not in caption


def test_optional_fields_missing_are_left_out():
    row = {"diagnosis": "lentigo", **dict.fromkeys(CRITERIA, "absent")}
    captions = build_captions(row, "dermoscopic")
    assert captions[0] == "Dermoscopic image of a lentigo."
    assert all(set(_words(c)) <= TEMPLATE_WORDS | {"lentigo"} for c in captions)
    assert build_captions({"diagnosis": "", "sex": "male"}, "clinical") == ()


def test_unknown_finding_value_keeps_the_row_words():
    row = {"diagnosis": "dermatofibroma", "vascular_structures": "glomerular"}
    assert finding_phrases(row) == ["glomerular vessels"]


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("melanoma (in situ)", "melanoma in situ"),
        ("melanoma (less than 0.76 mm)", "melanoma, less than 0.76 mm thick"),
        ("melanoma (more than 1.5 mm)", "melanoma, more than 1.5 mm thick"),
        ("reed or spitz nevus", "Reed or Spitz nevus"),
        ("miscellaneous", "miscellaneous lesion"),
        ("seborrheic keratosis", "seborrheic keratosis"),
    ],
)
def test_diagnosis_phrase(raw, expected):
    assert diagnosis_phrase(raw) == expected


def test_diagnosis_caption_is_one_of_the_case_captions():
    row = {"diagnosis": "clark nevus", "location": "back", "sex": "male"}
    assert diagnosis_caption("clark nevus", "dermoscopic") == "Clark nevus, dermoscopic image."
    assert diagnosis_caption("clark nevus", "dermoscopic") in build_captions(row, "dermoscopic")
    assert diagnosis_caption("melanoma (in situ)", "clinical") == (
        "Melanoma in situ, clinical photograph."
    )
    # Not the modality-free zero-shot template "{}.", which must stay unseen in training.
    assert diagnosis_caption("blue nevus", None) == "Blue nevus, image."
    with pytest.raises(ValueError, match="Unknown modality 'xray'"):
        diagnosis_caption("blue nevus", "xray")

    # Training on it must leave every zero-shot prompt unseen (the tokenizer is uncased).
    for modality in (*TEMPLATES, None):
        caption = diagnosis_caption("blue nevus", modality).lower()
        templates = TEMPLATES.get(modality, GENERIC_TEMPLATES)
        assert caption not in {t.format("blue nevus").lower() for t in templates}


def test_site_phrase():
    assert site_phrase("head neck") == "head or neck"
    assert site_phrase("lower limbs", article=True) == "a lower limb"
    assert site_phrase("upper limbs", article=True) == "an upper limb"
    assert site_phrase("absent") is None and site_phrase(None) is None


ATLAS_DIAGNOSES = {
    "basal cell carcinoma": "basal cell carcinoma",
    "blue nevus": "nevus",
    "clark nevus": "nevus",
    "combined nevus": "nevus",
    "congenital nevus": "nevus",
    "dermal nevus": "nevus",
    "dermatofibroma": None,
    "lentigo": None,
    "melanoma": "melanoma",
    "melanoma (0.76 to 1.5 mm)": "melanoma",
    "melanoma (in situ)": "melanoma",
    "melanoma (less than 0.76 mm)": "melanoma",
    "melanoma (more than 1.5 mm)": "melanoma",
    "melanoma metastasis": "melanoma",
    "melanosis": None,
    "miscellaneous": None,
    "recurrent nevus": "nevus",
    "reed or spitz nevus": "nevus",
    "seborrheic keratosis": "seborrheic keratosis",
    "vascular lesion": None,
}


def test_diagnosis_group_covers_the_twenty_atlas_diagnoses():
    assert len(ATLAS_DIAGNOSES) == 20
    assert {d: diagnosis_group(d) for d in ATLAS_DIAGNOSES} == ATLAS_DIAGNOSES
    assert set(ATLAS_DIAGNOSES.values()) - {None} == set(ATLAS_4CLASS)


def test_real_atlas_has_exactly_the_known_diagnoses(data_root: Path):
    assert {r["diagnosis"] for r in _meta_rows(data_root)} == set(ATLAS_DIAGNOSES)


def test_read_atlas_records(tiny_atlas: Path):
    records = {r.key: r for r in read_atlas(tiny_atlas)}
    # Case 2 has clinic == derm, so only its dermoscopic image is a record.
    assert sorted(records) == [
        "derm7pt-0001_clinical",
        "derm7pt-0001_dermoscopic",
        "derm7pt-0002_dermoscopic",
        "derm7pt-0003_clinical",
        "derm7pt-0003_dermoscopic",
    ]
    derm = records["derm7pt-0002_dermoscopic"]
    assert derm.image_path == tiny_atlas / "images" / "A" / "a2d.jpg"
    assert derm.meta["diagnosis"] == "melanoma (in situ)"
    assert derm.meta["diagnosis_group"] == "melanoma"
    assert derm.meta["modality"] == "dermoscopic"
    assert derm.meta["location"] == "head neck"
    assert derm.meta["pigment_network"] == "atypical"
    assert derm.meta["source"] == "derm7pt"
    assert derm.meta["paired_keys"] == []
    assert "atypical pigment network" in derm.captions[0]
    assert "melanoma in situ" in derm.captions[0]
    clinic = records["derm7pt-0003_clinical"]
    assert clinic.meta["paired_keys"] == ["derm7pt-0003_dermoscopic"]
    assert "pigment network" not in " ".join(clinic.captions)


def test_meta_csv_missing_columns_names_file_and_columns(tiny_atlas: Path):
    meta = tiny_atlas / "meta" / "meta.csv"
    lines = meta.read_text().splitlines()
    lines[0] = lines[0].replace("location", "site").replace("derm,", "dermoscopy,")
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"meta\.csv lacks the columns \['location', 'derm'\]"):
        list(read_atlas(tiny_atlas))


def test_missing_meta_csv_is_file_not_found(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="meta.csv"):
        list(read_atlas(tmp_path))
