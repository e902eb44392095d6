"""`skinclip index build|add|remove` and `skinclip search` on the synthetic shards."""

import json
import logging

from skinclip.cli import main
from skinclip.model.towers import create_skinclip
from skinclip.retrieval import build_case_index, load_case_index

FAST = ["--image-size", "64", "--workers", "0"]


def test_build_add_remove_and_filtered_search(tiny_shards, tmp_path, capsys, caplog):
    ix = str(tmp_path / "ix")
    # The old form `skinclip index --shards ...` still builds.
    assert (
        main(["index", "--shards", str(tiny_shards), "--out", ix, "--type", "ivf_flat", *FAST]) == 0
    )
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["count"] == 16 and manifest["index_type"] == "flat_ip"
    assert "too few to train" in manifest["index_params"]["note"]

    assert (
        main(
            ["index", "add", "--index", ix, "--shards", str(tiny_shards), "--splits", "val", *FAST]
        )
        == 0
    )
    assert "Added 8 case(s), replaced 0; the index now holds 32" in capsys.readouterr().out
    with caplog.at_level(logging.ERROR):
        args = ["index", "add", "--index", ix, "--shards", str(tiny_shards), "--splits", "val"]
        assert main([*args, *FAST]) == 2
    assert "already indexed" in caplog.text and "--replace" in caplog.text
    assert main([*args, "--replace", *FAST]) == 0
    assert "Added 0 case(s), replaced 8; the index now holds 32" in capsys.readouterr().out

    assert main(["index", "remove", "--index", ix, "--case-id", "tiny-01", *FAST]) == 0
    assert "now holds 30 item(s) of 15 case(s)" in capsys.readouterr().out

    query = ["search", "--index", ix, "--text", "melanoma", "--k", "4", *FAST]
    assert main([*query, "--where", "modality=clinical", "--unit", "item"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all("[clinical]" in line for line in lines)
    assert main(["search", "--index", ix, "--case", "tiny-00", "--k", "3", *FAST]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and not any(" tiny-00 " in line for line in lines)
    with caplog.at_level(logging.ERROR):
        assert main([*query, "--where", "modality"]) == 2
    assert "FIELD=VALUE" in caplog.text


def test_caption_index_answers_image_to_caption(tiny_shards, tmp_path):
    bundle = create_skinclip(image_size=32, pretrained_towers=False)
    captions = build_case_index(bundle, tiny_shards, ("train",), content="captions", num_workers=0)
    captions.save(tmp_path / "captions")
    loaded = load_case_index(tmp_path / "captions", bundle)
    image = build_case_index(bundle, tiny_shards, ("train",), num_workers=0)
    hits = loaded.search(image._vectors[0], k=3, unit="item")[0]
    assert len(hits) == 3 and all(h.key.endswith("#caption") for h in hits)
    assert all(h.item["content"] == "captions" and h.item["caption"] for h in hits)


def test_retrieval_report_measures(tiny_shards, tmp_path):
    assert main(["retrieval-report", str(tiny_shards), "--out", str(tmp_path / "r"), *FAST]) == 0
    report = json.loads((tmp_path / "r" / "retrieval.json").read_text())
    assert (report["train_images"], report["test_images"]) == (16, 16)
    precision = report["image_to_case_same_diagnosis"]
    assert all(0 <= precision[f"P@{k}"] <= 1 for k in (1, 5, 10))
    cross = report["clinical_to_dermoscopic"]
    assert cross["queries"] == 8 and cross["candidates"] == 8
    assert cross["top1"] <= cross["top5"] <= 1


def test_cross_modality_and_precision_by_hand():
    import torch

    from index import CaseIndex
    from skinclip.encode import EncodedSplit
    from skinclip.retrieval_report import cross_modality, diagnosis_precision

    eye = torch.eye(4)
    # Cases a, b, c: a's and b's photos sit on their own dermoscopic image; c's photo on a's.
    c_derm = torch.nn.functional.normalize(eye[2] + 0.1 * eye[0], dim=0)
    embeds = torch.stack([eye[0], eye[0], eye[1], eye[1], c_derm, eye[0]])
    metas = [
        {"key": f"{c}_{m}", "case_id": c, "modality": m, "diagnosis": d}
        for c, d in (("a", "nevus"), ("b", "melanoma"), ("c", "nevus"))
        for m in ("dermoscopic", "clinical")
    ]
    test = EncodedSplit(embeds, embeds, metas, [""] * 6)
    cross = cross_modality(test)
    assert (cross["queries"], cross["top1"], cross["top5"]) == (3, 2 / 3, 1.0)

    train_items = [
        {"key": "t1", "case_id": "t1", "diagnosis": "nevus"},
        {"key": "t2", "case_id": "t2", "diagnosis": "melanoma"},
    ]
    index = CaseIndex.build(torch.stack([eye[0], eye[1]]).numpy(), train_items, "m")
    # Queries near axis 0 find t1 (nevus) first, those on axis 1 find t2 (melanoma): every
    # query's top case shares its diagnosis.
    precision = diagnosis_precision(index, test, "diagnosis")
    assert precision["P@1"] == 1.0
    assert precision["P@5"] == 0.5  # both train cases returned; one matches each query


def test_repeated_where_flags_combine(tiny_shards, tmp_path, capsys):
    ix = str(tmp_path / "ix")
    assert main(["index", "build", "--shards", str(tiny_shards), "--out", ix, *FAST]) == 0
    capsys.readouterr()
    query = ["search", "--index", ix, "--text", "nevus", "--k", "10", "--unit", "item", *FAST]
    assert main([*query, "--where", "modality=clinical", "--where", "diagnosis=nevus"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all("[clinical]" in line and " nevus " in line for line in lines)
