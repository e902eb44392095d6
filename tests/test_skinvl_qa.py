"""Atlas question/answer pairs: every answer read from the case's own fields."""

import csv

import pytest

from skinvl.qa import PHRASINGS, qa_pairs

ROW = {
    "diagnosis": "melanoma (in situ)",
    "location": "head neck",
    "sex": "male",
    "elevation": "flat",
    "management": "excision",
    "pigment_network": "atypical",
    "streaks": "irregular",
    "pigmentation": "absent",
    "regression_structures": "absent",
    "dots_and_globules": "absent",
    "blue_whitish_veil": "present",
    "vascular_structures": "absent",
}


def test_dermoscopic_pairs_by_hand():
    pairs = {p.kind: p for p in qa_pairs(ROW, "dermoscopic")}
    assert pairs["diagnosis"].answer == "Melanoma in situ."
    assert pairs["diagnosis_group"].answer == "melanoma" and pairs["diagnosis_group"].closed
    assert pairs["modality"].answer == "dermoscopic"
    assert pairs["site"].answer == "Head or neck."
    assert pairs["elevation"].answer == "flat"
    assert pairs["management"].answer == "Excision."
    assert pairs["presence:pigment_network"].answer == "yes"
    assert pairs["presence:pigment_network"].question == "Is pigment network present?"
    assert pairs["type:pigment_network"].answer == "atypical"
    assert pairs["presence:pigmentation"].answer == "no"
    assert "type:pigmentation" not in pairs
    assert pairs["presence:blue_whitish_veil"].answer == "yes"
    assert "type:blue_whitish_veil" not in pairs
    assert pairs["describe"].answer.startswith("Dermoscopic image of a flat melanoma in situ")


def test_clinical_images_get_no_dermoscopic_criteria_and_phrasings_multiply():
    clinical = qa_pairs(ROW, "clinical")
    assert not any(p.kind.startswith(("presence:", "type:")) for p in clinical)
    everything = qa_pairs(ROW, "clinical", all_phrasings=True)
    assert len({p.question for p in everything if p.kind == "site"}) == len(PHRASINGS["site"])
    assert all(p.phrasing == 0 for p in clinical)


def test_missing_fields_ask_nothing():
    pairs = qa_pairs({"diagnosis": "clark nevus"}, "dermoscopic")
    assert {p.kind for p in pairs} == {"diagnosis", "diagnosis_group", "modality", "describe"}


def test_every_answer_comes_from_the_real_row(data_root):
    meta = data_root / "derm7pt" / "meta" / "meta.csv"
    if not meta.is_file():
        pytest.skip("derm7pt not under SKINCLIP_DATA")
    with meta.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for pair in qa_pairs(row, "dermoscopic"):
            field = pair.kind.partition(":")[2]
            if pair.kind.startswith("presence:"):
                assert pair.answer == ("no" if row[field] == "absent" else "yes")
            elif pair.kind.startswith("type:"):
                assert pair.answer == row[field].replace("_", " ")
            elif pair.kind == "elevation":
                assert pair.answer == row["elevation"]
            elif pair.kind == "management":
                assert pair.answer.rstrip(".").lower() == row["management"]
