"""Benchmark inputs: MM-Skin CSVs, image,label CSVs and folder trees, with every gap counted."""

import pytest

from skinclip.eval.inputs import parse_categories, read_benchmark, read_table
from skinclip.labels import get_label_set

HAM = get_label_set("ham10000")


def test_mmskin_csv_counts_every_row_it_leaves_out(make_image, tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "sub/d.png"):
        make_image(f"imgs/{name}")
    csv_path = tmp_path / "HAM10000_test.csv"
    csv_path.write_text(
        "image,atributes,categories,sex\n"
        "a.jpg,[],['Nevus'],f\n"
        "missing.jpg,[],['Melanoma'],m\n"
        "b.jpg,[],[],m\n"
        "c.jpg,[],['Psoriasis'],m\n"
        "sub/d.png,[],\"['Psoriasis', 'melanoma']\",f\n"
        "a.jpg,[],['Nevus',,\n"
    )
    bench = read_table(csv_path, HAM, image_root=tmp_path / "imgs")
    assert bench.rows == 6
    assert [p.name for p in bench.paths] == ["a.jpg", "d.png"]
    # Multi-label: the first listed category the label set knows (melanoma) wins.
    assert bench.targets == [HAM.index("Nevus"), HAM.index("Melanoma")]
    assert bench.multi_label == 1
    assert bench.metas[1] == {"sex": "f"}
    assert bench.left_out == {
        "image file missing": 1,
        "no label": 1,
        "label not in label set 'ham10000'": 1,
        "unreadable categories cell": 1,
    }
    assert bench.examples["image file missing"][0].endswith("missing.jpg")
    summary = bench.summary()
    assert summary["coverage"] == pytest.approx(2 / 6)


def test_plain_label_csv_and_folder_labels(make_image, tmp_path):
    make_image("Patch16/tumor_skin_melanoma_melanoma/t1.jpg")
    make_image("Patch16/nontumor_skin_dermis_dermis/t2.jpg")
    csv_path = tmp_path / "patch.csv"
    csv_path.write_text(
        "image,label\n"
        "Patch16/tumor_skin_melanoma_melanoma/t1.jpg,tumor\n"
        "Patch16/nontumor_skin_dermis_dermis/t2.jpg,nontumor\n"
    )
    two = read_table(csv_path, get_label_set("patch16"))
    assert two.targets == [0, 1]
    tissue = get_label_set("patch16_tissue")
    sixteen = read_table(csv_path, tissue, label_from="folder")
    assert sixteen.targets == [
        tissue.index("tumor_skin_melanoma_melanoma"),
        tissue.index("nontumor_skin_dermis_dermis"),
    ]


def test_folder_tree(make_image, tmp_path):
    make_image("tree/Nevus/a.jpg")
    make_image("tree/melanoma/b.png", fmt="PNG")
    make_image("tree/unknown/c.jpg")
    bench = read_benchmark(tmp_path / "tree", HAM)
    assert sorted(bench.targets) == sorted([HAM.index("Nevus"), HAM.index("Melanoma")])
    assert bench.left_out == {"label not in label set 'ham10000'": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="<label>/ subfolders"):
        read_benchmark(tmp_path / "empty", HAM)


def test_bad_tables_name_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,diagnosis\nx.jpg,Nevus\n")
    with pytest.raises(ValueError, match=r"bad.csv has columns.*'categories'"):
        read_table(bad, HAM)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_benchmark(tmp_path / "nope.csv", HAM)


def test_parse_categories_forms():
    assert parse_categories("['Nevus']") == ["Nevus"]
    assert parse_categories("Nevus") == ["Nevus"]
    assert parse_categories("[]") == []
    with pytest.raises(ValueError, match="unreadable categories cell"):
        parse_categories("['Nevus',")
