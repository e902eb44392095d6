"""`skinclip evaluate` and `skinclip zeroshot` end to end on generated benchmark files."""

import csv
import json
import logging

import pytest
from PIL import Image

from skinclip.cli import main
from skinclip.eval.calibration import Temperature
from skinclip.eval.run import temperature_beside
from skinclip.labeling import partial_path, settings_path

FAST = ["--image-size", "64", "--workers", "0"]
COLOURS = {"Nevus": (150, 100, 60), "Melanoma": (40, 30, 30), "Dermatofibroma": (200, 150, 140)}


def _mmskin_csv(tmp_path, name: str, per_class: int) -> str:
    """An MM-Skin classification CSV over generated images, with a sex column."""
    rows = ["image,atributes,categories,sex"]
    for label, colour in COLOURS.items():
        for i in range(per_class):
            rel = f"HAM10000/{name}/{label}_{i}.jpg"
            path = tmp_path / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            shade = tuple(min(255, c + 9 * i) for c in colour)
            Image.new("RGB", (80, 64), shade).save(path)
            rows.append(f"{rel},[],['{label}'],{'female' if i % 2 else 'male'}")
    table = tmp_path / f"{name}.csv"
    table.write_text("\n".join(rows) + "\n")
    return str(table)


def test_report_on_an_mmskin_csv(tmp_path):
    test_csv = _mmskin_csv(tmp_path, "test", 4)
    with open(test_csv, "a") as f:
        f.write("HAM10000/test/missing.jpg,[],['Nevus'],male\n")
        f.write("HAM10000/test/broken.jpg,[],['Melanoma'],male\n")
    (tmp_path / "images" / "HAM10000" / "test" / "broken.jpg").write_text("not a jpeg")
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            test_csv,
            "--labels",
            "ham10000",
            "--image-root",
            str(tmp_path / "images"),
            "--calibration",
            _mmskin_csv(tmp_path, "val", 3),
            "--probe-train",
            _mmskin_csv(tmp_path, "train", 4),
            "--subgroups",
            "sex",
            "--resamples",
            "20",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    test = report["test"]
    assert (test["rows"], test["evaluated"]) == (14, 12)
    assert test["left_out"] == {"image file missing": 1, "unreadable image": 1}
    assert report["classes"][:2] == ["Nevus", "Melanoma"]
    zs = report["zeroshot"]
    matrix = zs["confusion_matrix"]
    assert sum(map(sum, matrix)) == 12
    # Accuracy agrees with the confusion matrix it was reported with.
    trace = sum(matrix[i][i] for i in range(len(matrix)))
    assert zs["accuracy"] == pytest.approx(trace / 12)
    assert zs["top5_accuracy"] >= zs["accuracy"]
    assert {k: v["n"] for k, v in zs["subgroups"]["sex"].items()} == {"female": 6, "male": 6}
    assert report["calibration"]["split"] == "val.csv" and report["calibration"]["n"] == 9
    assert report["zeroshot_calibrated"]["accuracy"] == zs["accuracy"]
    assert report["probe"]["train"]["evaluated"] == 12
    for png in ("confusion_zeroshot.png", "confusion_probe.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "12 of 14 row(s) evaluated" in md and "image file missing: 1" in md
    saved = json.loads((out / "temperature.json").read_text())
    assert saved["label_set"] == "ham10000"


def test_report_on_atlas_shards_and_split_misuse(tiny_shards, tmp_path, caplog):
    out = tmp_path / "atlas"
    assert main(["evaluate", str(tiny_shards), "--out", str(out), "--resamples", "0", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["evaluated"] == 16  # 8 test cases x 2 images
    assert report["calibration"]["split"] == "val"
    assert report["probe"]["train"]["evaluated"] == 16
    assert set(report["zeroshot"]["subgroups"]) == {"modality", "sex", "location"}
    # The synthetic shards carry no seven-point annotations.
    assert report["concepts"]["blue-whitish veil"]["auroc"] is None
    assert "NaN" not in (out / "report.json").read_text()  # undefined metrics are null
    # Rerun into the same folder without calibration and probe: their figures go.
    args = ["evaluate", str(tiny_shards), "--out", str(out), "--resamples", "0", *FAST]
    assert main([*args, "--no-calibration", "--probe-train", "", "--no-concepts"]) == 0
    assert not (out / "confusion_probe.png").exists()
    assert "No linear probe: no training split was given" in (out / "report.md").read_text()
    assert not (out / "temperature.json").exists()
    assert (out / "confusion_zeroshot.png").exists()
    with caplog.at_level(logging.ERROR):
        args = ["evaluate", str(tiny_shards), "--out", str(out), "--calibration-split", "test"]
        assert main(args) == 2
    assert "'test' cannot also fit the temperature (--calibration-split test)" in caplog.text
    caplog.clear()
    val = ["evaluate", str(tiny_shards), "--out", str(out), "--split", "val"]
    with caplog.at_level(logging.ERROR):
        assert main([*val, "--calibration-split", "val", "--probe-train", "val"]) == 2
    assert "cannot also fit the temperature (--calibration-split val) or train the probe" in (
        caplog.text
    )
    assert "--no-calibration and --probe-train ''" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert main([*val, "--calibration-split", "test"]) == 2
    assert "Refusing to fit the temperature on the test split; use --calibration-split val" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--split", ""], "--split needs a split name"),
        (["--probe-train", "bogus"], "--probe-train 'bogus' is not a split"),
        (["--split", "val", "--calibration-split", "tset"], "--calibration-split 'tset'"),
        (["--temperature", "missing.json"], "--temperature missing.json: no such file"),
        (["--no-calibration", "--temperature", "t.json"], "contradict each other"),
    ],
)
def test_shard_options_are_refused_before_the_model_loads(
    tiny_shards, tmp_path, caplog, monkeypatch, flags, message
):
    monkeypatch.setattr("skinclip.cli._load_bundle", _must_not_load)
    with caplog.at_level(logging.ERROR):
        assert main(["evaluate", str(tiny_shards), "--out", str(tmp_path / "r"), *flags]) == 2
    assert message in caplog.text


def test_a_temperature_is_not_applied_to_the_split_it_was_fitted_on(
    tiny_shards, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr("skinclip.cli._load_bundle", _must_not_load)
    fitted = Temperature(2.0, "m", "atlas4", "val", 10, 1.2, 1.0)
    fitted.save(tmp_path / "temperature.json")
    args = ["evaluate", str(tiny_shards), "--out", str(tmp_path / "r"), "--split", "val"]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--temperature", str(tmp_path / "temperature.json")]) == 2
    assert "was fitted on the 'val' split, the one under test" in caplog.text


def test_file_options_are_refused_before_the_model_loads(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("skinclip.cli._load_bundle", _must_not_load)
    test_csv = _mmskin_csv(tmp_path, "test", 1)
    args = ["evaluate", test_csv, "--labels", "ham10000", "--out", str(tmp_path / "r")]
    args += ["--image-root", str(tmp_path / "images")]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--calibration", str(tmp_path / "missing.csv")]) == 2
        assert main([*args, "--probe-train", test_csv]) == 2
    assert "--calibration " in caplog.text and "missing.csv: no such file" in caplog.text
    assert "is the test set; --probe-train cannot name it too" in caplog.text


def test_no_calibration_also_drops_a_calibration_file(tmp_path):
    test_csv = _mmskin_csv(tmp_path, "test", 2)
    out = tmp_path / "report"
    args = ["evaluate", test_csv, "--labels", "ham10000", "--out", str(out), *FAST]
    args += ["--image-root", str(tmp_path / "images"), "--resamples", "0"]
    args += ["--calibration", _mmskin_csv(tmp_path, "val", 2), "--no-calibration"]
    assert main(args) == 0
    assert json.loads((out / "report.json").read_text()).get("calibration") is None
    assert not (out / "temperature.json").exists()


def _must_not_load(args):
    raise AssertionError("the model loaded before the options were checked")


def _zeroshot(tmp_path, *extra):
    return main(
        [
            "zeroshot",
            str(tmp_path / "imgs"),
            "--labels",
            "melanoma,nevus",
            "--out",
            str(tmp_path / "labels.csv"),
            *FAST,
            *extra,
        ]
    )


def test_zeroshot_resumes_a_killed_run_and_abstains(
    make_image, tmp_path, caplog, capsys, monkeypatch
):
    import skinclip.labeling as labeling

    for i in range(5):
        make_image(f"imgs/{i}.jpg", size=(64, 48), color=(40 * i, 90, 60))
    assert _zeroshot(tmp_path) == 0
    out = tmp_path / "labels.csv"
    full = out.read_text().splitlines()
    assert len(full) == 6 and not settings_path(out).exists()
    out.unlink()

    # A kill after the first batch of two images.
    real = labeling.iter_image_embeds

    def dies_after_one_batch(*args, **kwargs):
        for n, batch in enumerate(real(*args, **{**kwargs, "batch_size": 2})):
            if n == 1:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(labeling, "iter_image_embeds", dies_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        _zeroshot(tmp_path)
    monkeypatch.setattr(labeling, "iter_image_embeds", real)
    partial = partial_path(out)
    assert len(partial.read_text().splitlines()) == 3  # header + two rows
    # Junk from the kill: a torn row, and a row for an image that is not in this input.
    with partial.open("a") as f:
        f.write("/elsewhere/x.jpg,nevus,0.5,melanoma,0.5,m,,\n" + full[3][:10])

    # Other settings are refused rather than mixed into the same file.
    with caplog.at_level(logging.ERROR):
        assert _zeroshot(tmp_path, "--abstain-below", "0.9") == 2
    assert "interrupted run with other settings (abstain_below)" in caplog.text

    assert _zeroshot(tmp_path) == 0
    assert "2 kept from the interrupted run" in capsys.readouterr().out
    assert out.read_text().splitlines() == full
    assert not partial.exists() and not settings_path(out).exists()

    out.unlink()
    assert _zeroshot(tmp_path, "--abstain-below", "1.0") == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["abstained"] for r in rows] == ["yes"] * 5
    assert "coverage 0.0%" in capsys.readouterr().out

    # A kill before any row: the header is already on disk and the rerun starts afresh.
    out.unlink()

    def dies_at_once(*args, **kwargs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(labeling, "iter_image_embeds", dies_at_once)
    with pytest.raises(KeyboardInterrupt):
        _zeroshot(tmp_path)
    monkeypatch.setattr(labeling, "iter_image_embeds", real)
    assert partial.read_text().splitlines() == [full[0]]
    partial.write_text("")  # even a file the kill left empty
    assert _zeroshot(tmp_path) == 0
    assert out.read_text().splitlines() == full

    # An unreadable settings file is not trusted.
    partial.write_text(full[0] + "\n")
    settings_path(out).write_text("{not json")
    with caplog.at_level(logging.ERROR):
        assert _zeroshot(tmp_path) == 2
    assert "no settings file" in caplog.text


def test_temperature_lives_with_a_local_model(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"x")
    assert (
        temperature_beside(str(weights), "atlas4") == tmp_path / "model.pt.temperature.atlas4.json"
    )
    assert temperature_beside(f"local-dir:{tmp_path}", "ham10000") == (
        tmp_path / "temperature.ham10000.json"
    )
    assert temperature_beside("laion2b_s34b_b79k", "atlas4") is None


def test_concepts_command_scores_every_image(make_image, tmp_path):
    make_image("imgs/a.jpg", size=(64, 48))
    (tmp_path / "imgs" / "b.jpg").write_text("broken")
    out = tmp_path / "concepts.csv"
    args = ["concepts", str(tmp_path / "imgs"), "--out", str(out), "--modality", "dermoscopic"]
    assert main([*args, *FAST]) == 0
    rows = list(csv.DictReader(out.open()))
    assert "blue-whitish veil" in rows[0] and "erythema" not in rows[0]
    assert 0 < float(rows[0]["blue-whitish veil"]) < 1 and rows[0]["error"] == ""
    assert rows[1]["blue-whitish veil"] == "" and "unreadable" in rows[1]["error"]


def test_evaluate_notes_splits_the_model_trained_on(tiny_shards, tmp_path, monkeypatch):
    import torch

    from skinclip.model.towers import create_skinclip, trained_splits

    final_fit = tmp_path / "final.ckpt"
    torch.save(
        {"state_dict": {}, "datamodule_hyper_parameters": {"train_splits": ["train", "val"]}},
        final_fit,
    )
    older = tmp_path / "older.ckpt"
    torch.save({"state_dict": {}}, older)
    assert trained_splits(str(final_fit)) == ("train", "val")
    assert trained_splits(str(older)) == ("train",)
    assert trained_splits(None) == trained_splits("ViT-B-32.pt") == ()
    # Fine-tuned from the final fit: the weights have seen val too.
    tuned = tmp_path / "tuned.ckpt"
    torch.save(
        {
            "state_dict": {},
            "hyper_parameters": {"pretrained": str(final_fit)},
            "datamodule_hyper_parameters": {"train_splits": ["train"]},
        },
        tuned,
    )
    assert trained_splits(str(tuned)) == ("train", "val")
    assert trained_splits(str(tuned), own_only=True) == ("train",)

    # The checkpoints hold no weights: an untrained model stands in for theirs.
    untrained = create_skinclip(image_size=64, pretrained_towers=False)
    monkeypatch.setattr("skinclip.cli._load_bundle", lambda args: untrained)
    out = tmp_path / "r"
    args = ["evaluate", str(tiny_shards), "--out", str(out), "--resamples", "0", *FAST]
    args += ["--probe-train", "", "--no-concepts", "--checkpoint", str(final_fit)]
    assert main([*args, "--split", "val", "--no-calibration"]) == 0
    text = (out / "report.md").read_text()
    assert "trained on the 'val' split, so its scores there are not held out" in text
    assert "the temperature fitted there comes out too low" not in text

    assert main(args) == 0  # test scored, the temperature fitted on val, which it trained on
    text = (out / "report.md").read_text()
    assert "**Note:**" in text and "the temperature fitted there comes out too low" in text
    assert (out / "temperature.json").is_file()
    assert not temperature_beside(str(final_fit), "atlas4").exists()  # zeroshot must not use it

    assert main([*args[:-1], str(older)]) == 0
    assert "split, so" not in (out / "report.md").read_text()  # no trained-on-split note
    assert temperature_beside(str(older), "atlas4").exists()
