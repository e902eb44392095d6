"""The ``skinclip`` command: user errors exit with a message that names the problem."""

import csv
import importlib
import logging

import pytest

from skinclip.cli import main
from skinclip.model.towers import create_skinclip, export_open_clip


def test_shards_on_unknown_layout_lists_known_layouts(tmp_path, caplog):
    (tmp_path / "notes.txt").write_text("nothing here")
    with caplog.at_level(logging.ERROR):
        code = main(["shards", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "derm7pt" in caplog.text and "llava" in caplog.text.lower()


def test_shards_from_generic_csv_reports_skips(make_image, tmp_path):
    make_image("imgs/a.jpg")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not an image")
    table = tmp_path / "pairs.csv"
    table.write_text(
        "image,caption\nimgs/a.jpg,a nevus\nimgs/broken.jpg,a melanoma\nimgs/gone.jpg,a mole\n"
    )
    assert main(["shards", str(table), "--out", str(tmp_path / "out")]) == 0
    import json

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["total_samples"] == 1
    assert sorted(s["file"].split("/")[-1] for s in manifest["skipped"]) == [
        "broken.jpg",
        "gone.jpg",
    ]


@pytest.mark.parametrize("bad", ["truncated", "text", "empty"])
def test_zeroshot_writes_error_rows_for_unreadable_images(make_image, tmp_path, bad):
    good = make_image("new/good.jpg", size=(64, 48))
    broken = tmp_path / "new" / "broken.jpg"
    if bad == "truncated":
        broken.write_bytes(good.read_bytes()[:40])
    elif bad == "empty":
        broken.write_bytes(b"")
    else:
        broken.write_text("hello")
    out = tmp_path / "labels.csv"
    code = main(
        [
            "zeroshot",
            str(tmp_path / "new"),
            "--labels",
            "melanoma,nevus",
            "--out",
            str(out),
            "--k",
            "2",
            "--image-size",
            "64",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    rows = {r["image"].split("/")[-1]: r for r in csv.DictReader(out.open())}
    assert rows["good.jpg"]["error"] == ""
    assert {rows["good.jpg"]["label1"], rows["good.jpg"]["label2"]} == {"melanoma", "nevus"}
    p1, p2 = float(rows["good.jpg"]["prob1"]), float(rows["good.jpg"]["prob2"])
    assert p1 >= p2 and p1 + p2 == pytest.approx(1.0, abs=2e-4)
    assert rows["broken.jpg"]["label1"] == ""
    expected = "empty file (0 bytes)" if bad == "empty" else "unreadable"
    assert expected in rows["broken.jpg"]["error"]
    assert rows["good.jpg"]["model_id"] == "SkinCLIP-EffNetLite0-MiniLM"


def test_zeroshot_csv_without_image_column(tmp_path, caplog):
    table = tmp_path / "x.csv"
    table.write_text("path,label\na.jpg,nevus\n")
    with caplog.at_level(logging.ERROR):
        assert main(["zeroshot", str(table), "--out", str(tmp_path / "o.csv")]) == 2
    assert "'image' column" in caplog.text and "x.csv" in caplog.text


def test_search_without_index_says_how_to_build_it(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "search",
                "--index",
                str(tmp_path / "none"),
                "--text",
                "blue nevus",
                "--image-size",
                "64",
            ]
        )
    assert code == 2
    assert "skinclip index" in caplog.text


def test_output_paths_in_the_way_are_refused_before_any_work(make_image, tmp_path, caplog):
    make_image("imgs/a.jpg")
    (tmp_path / "afile").write_text("x")
    with caplog.at_level(logging.ERROR):
        assert main(["zeroshot", str(tmp_path / "imgs"), "--out", str(tmp_path / "imgs")]) == 2
        assert main(["shards", str(tmp_path / "imgs"), "--out", str(tmp_path / "afile")]) == 2
    assert "is a folder" in caplog.text and "afile is a file" in caplog.text
    assert not (tmp_path / "imgs.tmp").exists()


def test_k_must_be_positive(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["zeroshot", str(tmp_path), "--out", str(tmp_path / "o.csv"), "--k", "0"])
    assert exit_info.value.code == 2


def test_unreadable_checkpoint_and_unknown_tag(tmp_path, caplog):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with caplog.at_level(logging.ERROR):
        code = main(["search", "--index", str(tmp_path), "--text", "x", "--checkpoint", str(junk)])
    assert code == 2 and "junk.ckpt is not a readable checkpoint" in caplog.text

    from skinclip.model.towers import create_skinclip

    with pytest.raises(ValueError, match="neither a file nor a pretrained tag.*Tags: openai"):
        create_skinclip("RN50", "no-such-tag")


def test_zeroshot_rows_follow_input_order_and_bad_label_yaml(make_image, tmp_path, caplog):
    for name in ("1.jpg", "3.jpg"):
        make_image(f"imgs/{name}", size=(64, 48))
    (tmp_path / "imgs" / "2.jpg").write_text("broken")
    out = tmp_path / "o.csv"
    args = ["zeroshot", str(tmp_path / "imgs"), "--labels", "a,b", "--out", str(out)]
    assert main([*args, "--image-size", "64", "--workers", "0"]) == 0
    assert [r["image"][-5:] for r in csv.DictReader(out.open())] == ["1.jpg", "2.jpg", "3.jpg"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("not: [a")
    with caplog.at_level(logging.ERROR):
        assert (
            main(["zeroshot", str(tmp_path / "imgs"), "--labels", str(bad), "--out", str(out)]) == 2
        )
    assert "bad.yaml is not valid YAML" in caplog.text


def test_non_utf8_csv_names_the_file_and_the_fix(tmp_path, caplog):
    table = tmp_path / "latin1.csv"
    table.write_bytes("image,caption\ncaf\xe9.jpg,n\xe6vus\n".encode("latin-1"))
    with caplog.at_level(logging.ERROR):
        assert main(["shards", str(table), "--out", str(tmp_path / "out")]) == 2
    assert "latin1.csv is not UTF-8" in caplog.text and "Re-save it as UTF-8" in caplog.text


@pytest.mark.parametrize(
    "argv",
    [
        ["quickstart", "--epoch", "1"],  # would silently be --epochs with prefix matching
        ["index", "build", "--shards", "x", "--out", "y", "--typ", "hnsw"],
    ],
)
def test_abbreviated_options_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, usage, unknown",
    [
        (["zeroshot", "imgs", "--out", "o.csv", "--topk", "3"], "skinclip zeroshot", "--topk 3"),
        (["index", "build", "--shards", "x", "--out", "y", "--bogus"], "index build", "--bogus"),
    ],
)
def test_unknown_option_shows_the_subcommands_usage(argv, usage, unknown, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"usage: {usage}" in err or f"usage: skinclip {usage}" in err
    assert f"unrecognized arguments: {unknown}" in err


@pytest.mark.parametrize("module, command", [("skinclip.train.cli", ["fit"]), ("skinvl.cli", [])])
def test_training_clis_refuse_abbreviated_options(module, command, capsys):
    # jsonargparse, like argparse, would otherwise read --trainer.max_step as --trainer.max_steps.
    run_training = importlib.import_module(module).run_training
    with pytest.raises(SystemExit) as exit_info:
        run_training([*command, "--trainer.max_step", "2", "--print_config"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --trainer.max_step 2" in capsys.readouterr().err


def test_commands_warn_when_no_checkpoint_gives_the_untrained_model(make_image, tmp_path, caplog):
    make_image("new/a.jpg", size=(64, 48))
    args = ["zeroshot", str(tmp_path / "new"), "--labels", "melanoma,nevus"]
    args += ["--out", str(tmp_path / "labels.csv"), "--image-size", "64", "--workers", "0"]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    assert "No --checkpoint given: using the untrained SkinCLIP model" in caplog.text

    # An exported model is a trained one.
    caplog.clear()
    export = tmp_path / "export"
    export_open_clip(create_skinclip(image_size=64, pretrained_towers=False), export)
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--model", f"local-dir:{export}"]) == 0
    assert "No --checkpoint" not in caplog.text
