"""The whole chain on a small slice of the real atlas, and its message when data is missing."""

import json

import pytest
import torch

from index import CaseIndex
from skinclip.quickstart import QuickstartOptions, find_atlas, run_quickstart, summary


def test_quickstart_on_atlas_slice(data_root, tmp_path):
    out = tmp_path / "qs"
    metrics = run_quickstart(
        QuickstartOptions(data=data_root, out=out, max_cases=36, epochs=1, image_size=64, workers=0)
    )

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"] == json.loads(json.dumps(metrics["test"]))
    # The printed summary carries the saved figures, says a trial's mean nothing, and ends with
    # where everything went.
    printed = summary(metrics, out)
    trained = saved["test"]["trained"]
    row = next(line.split() for line in printed.splitlines() if line.startswith("  trained"))
    assert row[1:] == [
        f"{trained['zeroshot_balanced_acc']:.3f}",
        f"{trained['text_to_image_R@10']:.3f}",
    ]
    assert "A trial on 36 cases: these figures mean nothing." in printed
    assert printed.splitlines()[-1].startswith(f"All metrics: {out / 'metrics.json'}")
    assert f"checkpoint (--checkpoint): {saved['checkpoint']};" in printed
    counts = saved["shards"]["counts"]["split"]
    # 36 cases with two images each but the few without a clinical photo.
    assert 60 <= sum(counts.values()) <= 72
    for name in ("trained", "untrained"):
        row = saved["test"][name]
        assert row["images"] == counts["test"]
        assert 0.0 <= row["zeroshot_balanced_acc"] <= 1.0
        assert 0.0 <= row["text_to_image_R@10"] <= 1.0
        assert row["zeroshot_images"] <= row["images"]
    # Training moved the weights, so the two models must not score identically on everything.
    assert saved["test"]["trained"] != saved["test"]["untrained"]

    # The default final fit trains on the train and validation cases; the index holds both.
    checkpoint = torch.load(saved["checkpoint"], map_location="cpu", weights_only=False)
    assert tuple(checkpoint["datamodule_hyper_parameters"]["train_splits"]) == ("train", "val")
    assert checkpoint["datamodule_hyper_parameters"]["train_image_size"] == 64
    index = CaseIndex.load(out / "index")
    assert len(index) == counts["train"] + counts["val"]
    assert len(saved["examples"]) == 3
    assert all(len(e["hits"]) == 3 for e in saved["examples"])
    # The index holds no test case: no test query finds itself.
    test_cases = {e["query"].split("_")[0] for e in saved["examples"]}
    assert not test_cases & {h["case_id"] for e in saved["examples"] for h in e["hits"]}


def test_missing_data_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SKINCLIP_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="derm.cs.sfu.ca.*--data"):
        find_atlas(None)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        find_atlas(tmp_path)


def test_quickstart_refuses_to_resume_a_run_with_other_settings(tmp_path):
    from skinclip.quickstart import _check_same_run

    train_dir = tmp_path / "train"
    _check_same_run(train_dir, {"epochs": 1, "shard_counts": {"train": 10}})
    (train_dir / "checkpoints").mkdir()
    (train_dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    _check_same_run(train_dir, {"epochs": 1, "shard_counts": {"train": 10}})  # same: resumes
    with pytest.raises(ValueError, match=r"other settings \(shard_counts\).*another --out"):
        _check_same_run(train_dir, {"epochs": 1, "shard_counts": {"train": 4}})
    # The check made before the shards are rewritten compares what it is given, writes nothing.
    record = (train_dir / "quickstart_run.json").read_text()
    _check_same_run(train_dir, {"epochs": 1}, record_it=False)
    with pytest.raises(ValueError, match=r"other settings \(max_cases\)"):
        _check_same_run(train_dir, {"epochs": 1, "max_cases": 30}, record_it=False)
    assert (train_dir / "quickstart_run.json").read_text() == record


def test_quickstart_refuses_a_config_that_trains_on_test(tmp_path):
    import yaml

    from skinclip.quickstart import _refuse_training_on_test, training_configs

    defaults = training_configs(None)
    parsed = [yaml.safe_load(path.read_text()) for path in defaults]
    _refuse_training_on_test(defaults, parsed)  # the default final fit: train + val
    assert parsed[-1]["data"]["train_splits"] == ["train", "val"]
    user = tmp_path / "mine.yaml"
    user.write_text("data:\n  train_splits: [train, val, test]\n")
    assert training_configs(user) == [user]
    with pytest.raises(ValueError, match=r"mine.yaml train\(s\) on the test split.*held out"):
        _refuse_training_on_test([user], [yaml.safe_load(user.read_text())])
    dotted = {"data.train_splits": ["train", "test"]}  # jsonargparse reads dotted keys too
    with pytest.raises(ValueError, match="on the test split"):
        _refuse_training_on_test([user], [dotted])
    # A data section kept in another file is checked on the trained checkpoint instead.
    _refuse_training_on_test([user], [{"data": "data.yaml"}])
