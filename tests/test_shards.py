"""Shard writing: webdataset round trip, skip reporting, atomic replacement of a previous run."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image, ImageFile

from skinclip.data.atlas import read_atlas
from skinclip.data.layouts import read_source
from skinclip.data.records import ImageRecord
from skinclip.data.shards import read_manifest, shard_paths, write_shards


def _record(key: str, path: Path, captions=("A brown macule.",), split="train", **meta):
    meta = {"case_id": key, "modality": "clinical", "split": split, **meta}
    return ImageRecord(key=key, image_path=path, captions=tuple(captions), meta=meta)


def _read_split(out_dir: Path, split: str) -> dict[str, dict]:
    urls = [str(p) for p in shard_paths(out_dir, split)]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}


def test_round_trip_jpeg_bytes_kept_png_reencoded(tmp_path: Path, make_image):
    jpg = make_image("in/a.jpg")
    png_named_jpg = make_image("in/b.jpg", fmt="PNG")  # suffix lies; content decides
    rgba = make_image("in/c.png", fmt="PNG", mode="RGBA")
    records = [
        _record("a", jpg, ("Canonical a.", "Other a."), diagnosis="nevus"),
        _record("b", png_named_jpg, split="val"),
        _record("c", rgba, split="val", modality="dermoscopic"),
    ]
    manifest = write_shards(records, tmp_path / "out", source_name="unit")

    train = _read_split(tmp_path / "out", "train")
    assert train["a"]["jpg"] == jpg.read_bytes()
    assert train["a"]["txt"].decode() == "Canonical a."
    meta = json.loads(train["a"]["json"])
    assert meta["captions"] == ["Canonical a.", "Other a."]
    assert meta["diagnosis"] == "nevus" and meta["split"] == "train"

    val = _read_split(tmp_path / "out", "val")
    for key in ("b", "c"):
        img = Image.open(io.BytesIO(val[key]["jpg"]))
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (24, 16)
    assert manifest["total_samples"] == 3
    assert manifest["total_captions"] == 4
    assert manifest["counts"]["split_modality"] == {
        "train": {"clinical": 1},
        "val": {"clinical": 1, "dermoscopic": 1},
    }
    assert manifest["splits"]["test"] == {"samples": 0, "num_shards": 0, "shards": []}
    assert read_manifest(tmp_path / "out") == manifest


def test_bad_items_are_skipped_and_reported(tmp_path: Path, make_image, monkeypatch):
    good = [make_image(f"in/g{i}.jpg") for i in range(3)]
    truncated = make_image("in/trunc.jpg", size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:-200])
    text = tmp_path / "in" / "notes.jpg"
    text.write_text("this is not an image")
    records = [
        _record("g0", good[0]),
        _record("trunc", truncated),
        _record("missing", tmp_path / "in" / "nope.jpg"),
        _record("g1", good[1]),
        _record("text", text),
        _record("empty", good[2], captions=("  ", "")),
        _record("g2", good[2], split="test"),
        _record("g1", good[1]),
        _record("g3.v2", good[0]),
    ]
    # Even if other code asks PIL to pad truncated files, the writer must still catch them.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    manifest = write_shards(records, tmp_path / "out", max_skip_warnings=2)

    reasons = {s["key"]: (s["reason"], Path(s["file"]).name) for s in manifest["skipped"]}
    assert reasons == {
        "trunc": ("truncated image", "trunc.jpg"),
        "missing": ("missing file", "nope.jpg"),
        "text": ("not an image", "notes.jpg"),
        "empty": ("empty caption", "g2.jpg"),
        "g1": ("duplicate key", "g1.jpg"),
        "g3.v2": ("invalid key", "g0.jpg"),
    }
    assert manifest["skipped_count"] == 6
    assert manifest["skipped_by_reason"]["truncated image"] == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored after writing
    written = {**_read_split(tmp_path / "out", "train"), **_read_split(tmp_path / "out", "test")}
    assert sorted(written) == ["g0", "g1", "g2"]
    assert manifest["total_samples"] == 3


def test_shard_size_is_respected(tmp_path: Path, make_image):
    path = make_image("in/x.jpg")
    records = [_record(f"k{i:02d}", path) for i in range(7)]
    manifest = write_shards(records, tmp_path / "out", shard_size=3)
    assert manifest["splits"]["train"]["shards"] == [
        "train/shard-000000.tar",
        "train/shard-000001.tar",
        "train/shard-000002.tar",
    ]
    sizes = [
        sum(1 for _ in wds.WebDataset(str(p), shardshuffle=False))
        for p in shard_paths(tmp_path / "out", "train")
    ]
    assert sizes == [3, 3, 1]


def test_rerun_replaces_stale_shards(tmp_path: Path, make_image):
    path = make_image("in/x.jpg")
    out = tmp_path / "out"
    write_shards([_record(f"k{i}", path, split="test") for i in range(5)], out, shard_size=1)
    manifest = write_shards([_record("only", path)], out, shard_size=1)
    assert sorted(p.name for p in (out / "test").iterdir()) == []
    assert sorted(p.name for p in (out / "train").iterdir()) == ["shard-000000.tar"]
    assert manifest["total_samples"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test", "train"]


def test_crash_mid_run_keeps_previous_shards_and_leaves_no_partial_files(
    tmp_path: Path, make_image
):
    path = make_image("in/x.jpg")
    out = tmp_path / "out"
    before = write_shards([_record(f"k{i}", path) for i in range(4)], out, shard_size=2)

    def crashing():
        for i in range(3):
            yield _record(f"new{i}", path)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_shards(crashing(), out, shard_size=2)
    assert read_manifest(out) == before
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]
    assert not list(out.glob(".staging-*")) and not list(out.rglob("*.tmp"))
    assert sorted(_read_split(out, "train")) == ["k0", "k1", "k2", "k3"]


def test_read_manifest_missing_tells_user_to_run_shards(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run `skinclip shards` first"):
        read_manifest(tmp_path)


def test_tiny_atlas_to_shards(tiny_atlas: Path):
    (tiny_atlas / "images" / "B" / "b3d.jpg").unlink()
    manifest = write_shards(read_atlas(tiny_atlas), tiny_atlas.parent / "out", source_name="t")
    assert manifest["skipped"] == [
        {
            "key": "derm7pt-0003_dermoscopic",
            "file": str(tiny_atlas / "images" / "B" / "b3d.jpg"),
            "reason": "missing file",
        }
    ]
    assert manifest["counts"]["split"] == {"train": 2, "val": 1, "test": 1}
    test = _read_split(tiny_atlas.parent / "out", "test")
    assert json.loads(test["derm7pt-0003_clinical"]["json"])["diagnosis"] == "clark nevus"


def test_real_atlas_subset_round_trip(data_root: Path, tmp_path: Path):
    records = list(itertools.islice(read_source(data_root / "derm7pt"), 12))
    manifest = write_shards(records, tmp_path / "out", shard_size=5, source_name="derm7pt")
    assert manifest["skipped_count"] == 0 and manifest["total_samples"] == 12
    written = {}
    for split in ("train", "val", "test"):
        written.update(_read_split(tmp_path / "out", split))
    for record in records:
        sample = written[record.key]
        if Image.open(record.image_path).format == "JPEG":
            assert sample["jpg"] == record.image_path.read_bytes()
        assert sample["txt"].decode() == record.captions[0]
        assert json.loads(sample["json"])["case_id"] == record.meta["case_id"]


def test_shards_read_by_open_clip_training_script(tiny_shards):
    """open_clip's own webdataset loader (open_clip_train) reads our shards unchanged."""
    import argparse

    import open_clip
    from open_clip_train.data import get_wds_dataset

    from skinclip.model.towers import register_model_configs
    from skinclip.train.transforms import eval_transform

    register_model_configs()
    urls = sorted((tiny_shards / "val").glob("shard-*.tar"))
    args = argparse.Namespace(
        val_data="::".join(str(u) for u in urls),
        val_num_samples=16,
        batch_size=4,
        workers=0,
        world_size=1,
        seed=0,
        train_data=None,
        train_num_samples=None,
        train_data_upsampling_factors=None,
    )
    tokenizer = open_clip.get_tokenizer("SkinCLIP-EffNetLite0-MiniLM")
    info = get_wds_dataset(args, eval_transform(32), is_train=False, tokenizer=tokenizer)
    images, texts = next(iter(info.dataloader))
    assert images.shape == (4, 3, 32, 32)
    assert texts.shape[0] == 4
    assert sum(batch[0].shape[0] for batch in info.dataloader) == 16
