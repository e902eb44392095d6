"""Label sets: built-in presets, user YAML files and matching of data labels."""

import csv
import os
from pathlib import Path

import pytest

from skinclip.labels import LabelSet, builtin_names, get_label_set, load_label_set
from skinclip.zeroshot import templates_for

# MM-Skin benchmark file -> our preset; every category in the file must be a class.
BENCHMARK_FILES = {
    "HAM10000_test.csv": ("ham10000", 7),
    "ISIC_test.csv": ("isic2019", 8),
    "BCN20000_test.csv": ("bcn20000", 12),
    "MSKCC_test.csv": ("mskcc", 17),
    "Dermnet_test.csv": ("dermnet", 23),
    "Fitzpatrick_test.csv": ("fitzpatrick17k", 3),
    "DDI_2class_test.csv": ("ddi", 2),
    "HIBA_2class_test.csv": ("hiba", 2),
    "Patch16_2class_test.csv": ("patch16", 2),
}


def test_builtin_sets_load_with_their_sizes():
    sizes = {name: len(get_label_set(name)) for name in builtin_names()}
    assert sizes["patch16_tissue"] == 16
    assert sizes["atlas4"] == 4
    assert sizes["atlas"] == 15
    for preset, n in BENCHMARK_FILES.values():
        assert sizes[preset] == n


@pytest.mark.parametrize("filename", sorted(BENCHMARK_FILES))
def test_presets_cover_every_category_of_the_mmskin_file(filename):
    data = os.environ.get("SKINCLIP_DATA")
    path = Path(data or "", "mmskin_text", "classification", filename)
    if not data or not path.is_file():
        pytest.skip("MM-Skin classification CSVs not available (set SKINCLIP_DATA)")
    label_set = get_label_set(BENCHMARK_FILES[filename][0])
    with path.open(newline="") as f:
        categories = {row["categories"] for row in csv.DictReader(f)}
    for cell in categories:
        label = cell.strip("[]'\"")
        if not label:  # a few MSKCC rows have no category at all
            continue
        assert label_set.index(label) is not None, label


def test_index_ignores_case_and_spacing_but_not_words():
    label_set = get_label_set("dermnet")
    assert label_set.index("hair loss alopecia and other HAIR diseases") == label_set.names.index(
        "Hair loss  alopecia and other hair diseases"
    )
    assert label_set.index("hair loss") is None


def test_yaml_with_synonyms_and_descriptions(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nmodality: clinical\nclasses:\n"
        "  nevus: [melanocytic nevus, mole]\n"
        "  melanoma:\n    synonyms: [melanoma]\n    descriptions: [several colours]\n"
    )
    label_set = load_label_set(str(path))
    assert (label_set.name, label_set.modality, label_set.names) == (
        "mine",
        "clinical",
        ["nevus", "melanoma"],
    )
    prompts = label_set.classes[1].prompts(["photo of {}."])
    assert prompts == ["photo of melanoma.", "photo of melanoma, several colours."]
    assert label_set.classes[0].prompts(templates_for("clinical"))[0] == (
        "clinical photograph of melanocytic nevus."
    )


def test_bare_mapping_and_comma_list():
    path_free = load_label_set("a, b")
    assert path_free.names == ["a", "b"]
    assert path_free.classes[0].synonyms == ("a",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must map class names"),
        ("only: [x]\n", "at least two"),
        ("a: [x]\nA: [y]\n", "names a class twice"),
        ("a: x\nb: [y]\n", "list of strings"),
        ("classes:\n  a: {synonyms: [x], colour: red}\n  b: [y]\n", "unknown keys"),
        ("a: [x\n", "not valid YAML"),
    ],
)
def test_bad_yaml_is_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_label_set(str(path))


def test_missing_file_and_unknown_builtin():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_label_set("nope.yaml")
    with pytest.raises(ValueError, match="ham10000"):
        get_label_set("ham")


def test_from_mapping_keeps_order():
    label_set = LabelSet.from_mapping("t", {"z": [], "a": []})
    assert label_set.names == ["z", "a"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ham1000", "not a built-in label set"),
        ("HAM10000", "not a built-in label set"),
        ("a,a", "names 'a' twice"),
    ],
)
def test_specs_that_are_not_label_sets(spec, message):
    with pytest.raises(ValueError, match=message):
        load_label_set(spec)


def test_yaml_duplicate_keys_and_bad_modality(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("Nevus: [mole]\nMelanoma: [mm]\nNevus: [naevus]\n")
    with pytest.raises(ValueError, match="appears twice"):
        load_label_set(str(dup))
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: xray\nclasses:\n  a: [x]\n  b: [y]\n")
    with pytest.raises(ValueError, match="bad.yaml: modality 'xray'"):
        load_label_set(str(bad))
