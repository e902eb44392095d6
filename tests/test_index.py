"""Case index: exact-search agreement, case dedup, persistence and error paths."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import index.persist
from index import CaseIndex

DIM = 32
MODEL = "skinclip-vitb16-test"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_corpus(seed: int = 0, n_cases: int = 60, max_images: int = 4):
    """Random unit embeddings for cases of 1..max_images images, alternating modalities."""
    rng = np.random.default_rng(seed)
    items = []
    for c in range(n_cases):
        for i in range(int(rng.integers(1, max_images + 1))):
            modality = ("clinical", "dermoscopic")[i % 2]
            items.append(
                {
                    "key": f"case{c:03d}_{i}",
                    "case_id": f"case{c:03d}",
                    "caption": f"{modality} image {i} of case {c}",
                    "diagnosis": ("melanoma", "nevus", "psoriasis")[c % 3],
                    "modality": modality,
                    "image_path": f"images/case{c:03d}_{i}.jpg",
                    "source": "synthetic",
                    "split": "test",
                }
            )
    embeds = unit(rng.standard_normal((len(items), DIM)))
    return embeds, items


def exact_case_ranking(scores: np.ndarray, items: list[dict]) -> list[tuple[str, str, float]]:
    """(case_id, best key, best score) for every case, best first, by brute force."""
    best: dict[str, tuple[str, float]] = {}
    for row in np.argsort(-scores):
        case_id = items[row]["case_id"]
        if case_id not in best:
            best[case_id] = (items[row]["key"], float(scores[row]))
    return [(case_id, key, score) for case_id, (key, score) in best.items()]


@pytest.fixture(scope="module")
def corpus():
    embeds, items = make_corpus()
    return embeds, items, CaseIndex.build(embeds, items, model_id=MODEL, model_checksum="abc123")


@pytest.fixture(scope="module")
def queries():
    return unit(np.random.default_rng(1).standard_normal((7, DIM)))


# Search


def test_item_search_matches_exact_numpy(corpus, queries):
    embeds, items, idx = corpus
    k = 10
    all_hits = idx.search(queries, k=k, unit="item")
    scores = queries @ embeds.T  # (Q, N)
    keys = np.array([item["key"] for item in items])
    for q, hits in enumerate(all_hits):
        order = np.argsort(-scores[q])[:k]
        assert [h.key for h in hits] == keys[order].tolist()
        np.testing.assert_allclose([h.score for h in hits], scores[q, order], atol=1e-5)
        assert [h.rank for h in hits] == list(range(1, k + 1))


def test_case_search_matches_exact_case_ranking(corpus, queries):
    embeds, items, idx = corpus
    k = 8
    all_hits = idx.search(queries, k=k, unit="case")
    for q, hits in enumerate(all_hits):
        expected = exact_case_ranking(queries[q] @ embeds.T, items)[:k]
        assert [(h.case_id, h.key) for h in hits] == [(c, key) for c, key, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for *_, s in expected], atol=1e-5)
        assert len({h.case_id for h in hits}) == k


def test_case_search_fetches_past_a_crowding_case(caplog):
    # One case has 40 images right next to the query, so the first fetch holds only that case.
    rng = np.random.default_rng(2)
    query = unit(rng.standard_normal(DIM))
    crowd = unit(query + 0.05 * rng.standard_normal((40, DIM)))
    others = unit(rng.standard_normal((20, DIM)))
    embeds = np.concatenate([crowd, others])
    items = [{"key": f"crowd_{i}", "case_id": "crowd"} for i in range(40)]
    items += [{"key": f"solo_{i}", "case_id": f"solo_{i}"} for i in range(20)]
    idx = CaseIndex.build(embeds, items, model_id=MODEL)

    with caplog.at_level(logging.DEBUG, logger="index.store"):
        hits = idx.search(query, k=5, unit="case")[0]

    assert "found < 5 cases" in caplog.text  # the first fetch really was too small
    expected = exact_case_ranking(embeds @ query, items)[:5]
    assert [h.case_id for h in hits] == [c for c, *_ in expected]
    assert hits[0].case_id == "crowd"
    assert hits[0].key == expected[0][1]
    assert len({h.case_id for h in hits}) == 5


def test_case_hit_names_the_matching_view():
    rng = np.random.default_rng(3)
    clinical, dermoscopic, other = unit(rng.standard_normal((3, DIM)))
    items = [
        {"key": "a_clin", "case_id": "a", "modality": "clinical"},
        {"key": "a_derm", "case_id": "a", "modality": "dermoscopic"},
        {"key": "b_clin", "case_id": "b", "modality": "clinical"},
    ]
    idx = CaseIndex.build(np.stack([clinical, dermoscopic, other]), items, model_id=MODEL)

    hits = idx.search(unit(dermoscopic + 0.1 * clinical), k=2)[0]

    assert [h.case_id for h in hits] == ["a", "b"]
    assert hits[0].key == "a_derm"
    assert hits[0].item["modality"] == "dermoscopic"


def test_k_beyond_corpus_returns_everything(corpus, queries):
    _, items, idx = corpus
    case_hits = idx.search(queries[:2], k=10_000, unit="case")
    item_hits = idx.search(queries[:2], k=10_000, unit="item")
    assert [len(h) for h in case_hits] == [idx.n_cases] * 2
    assert [len(h) for h in item_hits] == [len(items)] * 2
    assert sorted(h.case_id for h in case_hits[0]) == sorted(idx.case_ids)


def test_single_vector_query_gives_one_list(corpus, queries):
    _, _, idx = corpus
    single = idx.search(queries[0], k=3)
    assert len(single) == 1
    assert single[0] == idx.search(queries[:1], k=3)[0]


def test_hits_do_not_expose_stored_rows(corpus, queries):
    _, _, idx = corpus
    hit = idx.search(queries[0], k=1)[0][0]
    hit.item["diagnosis"] = "edited"
    assert idx.search(queries[0], k=1)[0][0].item["diagnosis"] != "edited"


def test_search_by_case_excludes_itself_and_uses_every_image(corpus):
    embeds, items, idx = corpus
    case_id = next(c for c in idx.case_ids if len(idx.case_items(c)) >= 3)
    rows = [r for r, item in enumerate(items) if item["case_id"] == case_id]
    k = 6

    hits = idx.search_by_case(case_id, k=k)

    best_per_case = (embeds[rows] @ embeds.T).max(axis=0)  # (N,) best over the query images
    others = [r for r in range(len(items)) if items[r]["case_id"] != case_id]
    expected = exact_case_ranking(best_per_case[others], [items[r] for r in others])[:k]
    assert [h.case_id for h in hits] == [c for c, *_ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for *_, s in expected], atol=1e-5)
    assert [h.rank for h in hits] == list(range(1, k + 1))

    item_hits = idx.search_by_case(case_id, k=k, unit="item")
    assert len(item_hits) == k
    assert all(h.case_id != case_id for h in item_hits)


# Persistence


def test_save_load_round_trip(corpus, queries, tmp_path):
    _, items, idx = corpus
    folder = idx.save(tmp_path / "atlas_index")

    assert sorted(p.name for p in folder.iterdir()) == [
        "index.faiss",
        "items.sqlite",
        "manifest.json",
        "vectors.npy",
    ]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_id"] == MODEL
    assert manifest["model_checksum"] == "abc123"
    assert manifest["embed_dim"] == DIM
    assert manifest["index_type"] == "flat_ip"
    assert manifest["metric"] == "inner_product"
    assert manifest["count"] == len(items)
    assert manifest["n_cases"] == idx.n_cases
    assert manifest["format_version"] == 2
    assert manifest["index_params"]["kind"] == "flat_ip"

    loaded = CaseIndex.load(folder, expected_model_id=MODEL, expected_dim=DIM)
    assert loaded.manifest == idx.manifest
    for unit_ in ("case", "item"):
        assert loaded.search(queries, k=7, unit=unit_) == idx.search(queries, k=7, unit=unit_)
    assert loaded.case_items("case000") == idx.case_items("case000")


def test_save_replaces_previous_index(tmp_path):
    folder = tmp_path / "idx"
    CaseIndex.build(*make_corpus(seed=5, n_cases=4), model_id="old").save(folder)
    new_embeds, new_items = make_corpus(seed=6, n_cases=9)
    CaseIndex.build(new_embeds, new_items, model_id="new").save(folder)

    loaded = CaseIndex.load(folder)
    assert loaded.model_id == "new"
    assert len(loaded) == len(new_items)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_crash_mid_save_keeps_previous_index(tmp_path, queries, monkeypatch):
    folder = tmp_path / "idx"
    old = CaseIndex.build(*make_corpus(seed=5, n_cases=12), model_id="old")
    old.save(folder)
    new = CaseIndex.build(*make_corpus(seed=6, n_cases=30), model_id="new")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    # index.faiss is already written into the temporary folder when this fires.
    monkeypatch.setattr(index.persist, "write_items", crash)
    with pytest.raises(OSError, match="disk full"):
        new.save(folder)

    loaded = CaseIndex.load(folder, expected_model_id="old")
    assert len(loaded) == len(old)
    assert loaded.search(queries, k=5) == old.search(queries, k=5)
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_save_refuses_a_folder_that_is_not_an_index(corpus, tmp_path):
    _, _, idx = corpus
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="Refusing to replace"):
        idx.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_load_missing_folder_or_file(corpus, tmp_path):
    _, _, idx = corpus
    with pytest.raises(FileNotFoundError, match="skinclip index"):
        CaseIndex.load(tmp_path / "nowhere")
    folder = idx.save(tmp_path / "idx")
    (folder / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match="index.faiss.*skinclip index"):
        CaseIndex.load(folder)


def test_load_rejects_other_model(corpus, tmp_path):
    _, _, idx = corpus
    folder = idx.save(tmp_path / "idx")
    with pytest.raises(ValueError, match=f"'{MODEL}'.*'other-model'.*index build.*--checkpoint"):
        CaseIndex.load(folder, expected_model_id="other-model")
    with pytest.raises(ValueError, match=f"{DIM}-dim.*768-dim.*Rebuild"):
        CaseIndex.load(folder, expected_dim=768)
    with pytest.raises(ValueError, match="'abc123'.*'fff000'"):
        CaseIndex.load(folder, expected_model_checksum="fff000")
    assert len(CaseIndex.load(folder, expected_model_checksum="abc123")) == len(idx)


def test_load_rejects_corrupt_folder(corpus, tmp_path):
    _, _, idx = corpus
    folder = idx.save(tmp_path / "idx")
    con = sqlite3.connect(folder / "items.sqlite")
    con.execute("DELETE FROM items WHERE row = (SELECT MAX(row) FROM items)")
    con.commit()
    with pytest.raises(ValueError, match="corrupt.*counts disagree"):
        CaseIndex.load(folder)
    con.execute("UPDATE items SET data = '{not json' WHERE row = 3")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="row 3, is not valid JSON"):
        CaseIndex.load(folder)
    (folder / "items.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="not a readable index metadata database"):
        CaseIndex.load(folder)

    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        CaseIndex.load(folder)


# Bad input


@pytest.mark.parametrize(
    ("embeds", "match"),
    [
        (np.zeros((2, 3, DIM), np.float32), "shape"),
        (np.ones((2, DIM), np.int64), "float"),
        (np.zeros((2, 0), np.float32), "positive embedding dim"),
        (np.full((2, DIM), np.nan, np.float32), "NaN"),
        (np.full((2, DIM), 3.0, np.float32), "L2-normalised.*normalize=True"),
    ],
)
def test_build_rejects_bad_embeds(embeds, match):
    items = [{"key": "a", "case_id": "a"}, {"key": "b", "case_id": "b"}]
    with pytest.raises(ValueError, match=match):
        CaseIndex.build(embeds, items, model_id=MODEL)


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ([{"key": "a", "case_id": "a"}], "2 rows but items has 1"),
        ([{"key": "a", "case_id": "a"}, {"key": "a", "case_id": "b"}], "repeats key 'a'"),
        ([{"key": "a", "case_id": "a"}, {"key": "b"}], r"items\[1\].*'case_id'"),
        ([{"key": "a", "case_id": "a"}, {"key": "b", "case_id": 7}], "str()"),
        ([{"key": "a", "case_id": "a"}, {"key": "b", "case_id": "b", "x": {1, 2}}], "JSON"),
    ],
)
def test_build_rejects_bad_items(items, match):
    embeds = unit(np.random.default_rng(0).standard_normal((2, DIM)))
    with pytest.raises(ValueError, match=match):
        CaseIndex.build(embeds, items, model_id=MODEL)


def test_build_renormalises_near_unit_rows_and_stores_paths_as_text():
    embeds = unit(np.random.default_rng(0).standard_normal((2, DIM))).astype(np.float16)
    items = [
        {"key": "a", "case_id": "a", "image_path": Path("img/a.jpg")},
        {"key": "b", "case_id": "b", "image_path": Path("img/b.jpg")},
    ]
    idx = CaseIndex.build(embeds, items, model_id=MODEL)
    top = idx.search(embeds[0].astype(np.float32) / np.linalg.norm(embeds[0]), k=1)[0][0]
    assert top.key == "a"
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert top.item["image_path"] == "img/a.jpg"


def test_search_rejects_bad_queries(corpus):
    _, _, idx = corpus
    with pytest.raises(ValueError, match=f"dim 512 but this index expects {DIM}.*{MODEL}"):
        idx.search(unit(np.ones((1, 512))))
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError, match="normalize=True"):
        idx.search(np.ones(DIM, np.float32))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        idx.search(unit(np.ones(DIM)), k=0)
    with pytest.raises(ValueError, match=r"\['case', 'item'\]"):
        idx.search(unit(np.ones(DIM)), unit="image")
    with pytest.raises(ValueError, match="'no-such-case' is not in this index"):
        idx.search_by_case("no-such-case")


def test_package_imports_without_torch():
    code = "import sys, index; assert 'torch' not in sys.modules, 'index imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
