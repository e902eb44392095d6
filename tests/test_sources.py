"""Source readers and layout detection, each on a tiny fixture file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skinclip.data.layouts import LAYOUTS, detect_source, read_source
from skinclip.data.sources import (
    read_caption_csv,
    read_image_folder,
    read_jsonl,
    read_llava,
    read_mmskin_vqa,
)
from skinclip.data.splits import hash_split


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mmskin_vqa_groups_answers_by_image(tmp_path: Path):
    path = _write(
        tmp_path / "vqa.csv",
        "image,question,answer\n"
        "dataset/bk1_2.png,What does the image show?,The image shows a digital mucous cyst.\n"
        'dataset/bk1_3.png,Is it raised?,"No, the lesion is flat."\n'
        "dataset/bk1_2.png,Where is it?,It is on the finger.\n"
        "dataset/bk1_4.png,What is it?,\n",
    )
    records = {r.meta["image"]: r for r in read_mmskin_vqa(path, default_modality="clinical")}
    assert list(records) == ["dataset/bk1_2.png", "dataset/bk1_3.png", "dataset/bk1_4.png"]
    first = records["dataset/bk1_2.png"]
    assert first.captions == ("The image shows a digital mucous cyst.", "It is on the finger.")
    assert first.meta["qa"][1] == {"question": "Where is it?", "answer": "It is on the finger."}
    assert first.image_path == tmp_path / "dataset" / "bk1_2.png"
    assert first.meta["modality"] == "clinical"
    assert first.meta["case_id"] == "dataset/bk1_2.png"
    assert first.meta["split"] == hash_split("dataset/bk1_2.png")
    assert first.key.startswith("mmskin_vqa-dataset_bk1_2_png-")
    # An empty answer leaves the record without captions for the shard writer to report.
    assert records["dataset/bk1_4.png"].captions == ()


def test_caption_csv_columns_split_modality_and_image_root(tmp_path: Path):
    path = _write(
        tmp_path / "caps.csv",
        "image,caption,split,modality,case_id\n"
        "a.jpg,A pink papule.,valid,Dermoscopy,p1\n"
        "b.jpg,Scaly plaque.,test,microscopy,p1\n"
        "c.jpg,Blue nodule.,,,\n",
    )
    records = list(read_caption_csv(path, image_root=tmp_path / "imgs", default_modality=None))
    a, b, c = records
    assert (a.meta["split"], a.meta["modality"], a.meta["case_id"]) == ("val", "dermoscopic", "p1")
    # An unknown modality falls back to default_modality (None here).
    assert (b.meta["split"], b.meta["modality"]) == ("test", None)
    assert c.meta["split"] == hash_split("c.jpg") and c.meta["case_id"] == "c.jpg"
    assert a.image_path == tmp_path / "imgs" / "a.jpg"
    assert a.meta["source"] == "caps"


def test_label_csv_builds_caption_from_label(tmp_path: Path):
    path = _write(
        tmp_path / "labels.csv",
        "image,label,caption\nx.png,basal_cell_carcinoma,\ny.png,nevus,Brown macule.\n",
    )
    x, y = read_source(path, default_modality="dermoscopic")
    assert x.captions == ("a dermoscopic image of basal cell carcinoma",)
    assert x.meta["label"] == "basal_cell_carcinoma"
    assert y.captions == ("Brown macule.",)
    (z,) = read_caption_csv(_write(tmp_path / "l2.csv", "image,label\nz.png,psoriasis\n"))
    assert z.captions == ("an image of psoriasis",)


def test_csv_bad_split_value_names_file_row_and_value(tmp_path: Path):
    path = _write(tmp_path / "caps.csv", "image,caption,split\na.jpg,x,train\nb.jpg,y,holdout\n")
    with pytest.raises(ValueError, match=r"caps\.csv row 3: split 'holdout'"):
        list(read_caption_csv(path))


def test_csv_wrong_columns_error_names_file_and_columns(tmp_path: Path):
    path = _write(tmp_path / "weird.csv", "filename,description\na.jpg,x\n")
    with pytest.raises(ValueError) as err:
        read_caption_csv(path)
    message = str(err.value)
    assert "weird.csv" in message
    assert "['filename', 'description']" in message
    assert "'image'" in message and "caption or text or label" in message
    with pytest.raises(ValueError, match=r"weird\.csv has the columns \['filename'"):
        detect_source(path)


def test_jsonl_reader_and_bad_line(tmp_path: Path):
    lines = [
        {"image": "i/1.jpg", "text": "Nodular melanoma on the back."},
        {"image": "i/1.jpg", "caption": "Pigmented nodule."},
        {"image": "i/2.jpg", "label": "wart", "split": "train"},
    ]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    one, two = read_source(path)
    assert one.captions == ("Nodular melanoma on the back.", "Pigmented nodule.")
    assert two.captions == ("an image of wart",) and two.meta["split"] == "train"
    bad = _write(tmp_path / "bad.jsonl", '{"image": "a.jpg", "text": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 2: not valid JSON"):
        list(read_jsonl(bad))


def test_llava_reader_takes_gpt_turns(tmp_path: Path):
    data = [
        {
            "id": "q1",
            "image": "imgs/p1.png",
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the lesion."},
                {"from": "gpt", "value": "A scaly erythematous plaque."},
                {"from": "human", "value": "Diagnosis?"},
                {"from": "gpt", "value": "Psoriasis."},
            ],
        },
        {"id": "t1", "conversations": [{"from": "human", "value": "text only"}]},
    ]
    path = _write(tmp_path / "llava.json", json.dumps(data))
    assert detect_source(path) == "llava"
    (record,) = read_llava(path, default_modality="clinical")
    assert record.captions == ("A scaly erythematous plaque.", "Psoriasis.")
    assert record.meta["questions"] == [["Describe the lesion.", "Diagnosis?"]]
    assert record.meta["conversation_ids"] == ["q1"]
    assert record.image_path == tmp_path / "imgs" / "p1.png"


def test_image_folder_reader(tmp_path: Path, make_image):
    make_image("tree/melanoma/m1.jpg")
    make_image("tree/nevus/n1.png", fmt="PNG")
    _write(tmp_path / "tree" / "nevus" / "notes.txt", "not an image")
    root = tmp_path / "tree"
    assert detect_source(root) == "folder"
    records = list(read_image_folder(root, default_modality="dermoscopic"))
    assert [r.meta["label"] for r in records] == ["melanoma", "nevus"]
    assert records[0].captions == ("a dermoscopic image of melanoma",)
    assert records[1].image_path == root / "nevus" / "n1.png"
    assert records[1].meta["case_id"] == "nevus/n1.png"


def test_detect_source_layouts(tmp_path: Path, tiny_atlas: Path):
    assert detect_source(tiny_atlas) == "derm7pt"
    vqa = _write(tmp_path / "v.csv", "image,question,answer\n")
    assert detect_source(vqa) == "mmskin_vqa"
    assert detect_source(_write(tmp_path / "c.csv", "image,text\n")) == "csv"
    assert detect_source(_write(tmp_path / "c.jsonl", "")) == "jsonl"
    assert len(list(read_source(tiny_atlas))) == 5


def test_detect_source_error_lists_known_layouts(tmp_path: Path):
    (tmp_path / "empty_dir").mkdir()
    for path in (
        _write(tmp_path / "notes.txt", "hello"),
        _write(tmp_path / "other.json", '{"a": 1}'),
        tmp_path / "empty_dir",
    ):
        with pytest.raises(ValueError, match="Known layouts") as err:
            detect_source(path)
        assert all(kind in str(err.value) for kind in LAYOUTS)
    with pytest.raises(FileNotFoundError):
        detect_source(tmp_path / "nope.csv")


def test_read_source_unknown_kind_lists_choices(tmp_path: Path):
    with pytest.raises(ValueError, match=r"Unknown source kind 'tsv'.*'mmskin_vqa'"):
        read_source(tmp_path, kind="tsv")
    with pytest.raises(ValueError, match=r"Unknown reader options \['image_dir'\]; valid ones"):
        read_source(_write(tmp_path / "d.csv", "image,text\na,b\n"), image_dir=tmp_path)
    with pytest.raises(ValueError, match="default_modality 'xray'"):
        list(read_source(_write(tmp_path / "c.csv", "image,text\na,b\n"), default_modality="xray"))


def test_real_mmskin_vqa_csv(data_root: Path):
    path = data_root / "mmskin_text" / "vqa" / "MM-Skin_test.csv"
    assert detect_source(path) == "mmskin_vqa"
    records = list(read_source(path))
    assert len(records) == 4391
    assert sum(len(r.meta["qa"]) for r in records) == 5452
    assert all(r.captions for r in records)


def test_keys_of_names_that_clean_alike_stay_distinct():
    from skinclip.data.records import safe_key

    keys = {safe_key(name) for name in ("a b.jpg", "a_b.jpg", "a.b.jpg", "痣.jpg", "癌.jpg")}
    assert len(keys) == 5
    assert safe_key("derm7pt-0001_dermoscopic") == "derm7pt-0001_dermoscopic"
    assert all(safe_key(k) == k for k in keys)
