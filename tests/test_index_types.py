"""Index layouts against exact search, filters that return k, updates and small collections."""

import logging

import numpy as np
import pytest

from index import CaseIndex, IndexSpec, choose_spec
from index.types import PQ_MIN_TRAIN, fit_to_size

MODEL = "test-model"
DIM = 32


def clustered(n: int, dim: int = DIM, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors around fixed random cluster centres, so neighbourhoods exist; ``seed``
    draws other points of the same mixture (queries)."""
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def items_for(n: int, offset: int = 0) -> list[dict]:
    return [
        {
            "key": f"img{i}",
            "case_id": f"case{i // 2}",
            "modality": ("clinical", "dermoscopic")[i % 2],
            "diagnosis": ("nevus", "melanoma", "nevus", "bcc")[(i // 2) % 4],
        }
        for i in range(offset, offset + n)
    ]


def exact_items(vectors, queries, k, mask=None):
    sims = queries @ vectors.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall_at_k(idx, vectors, queries, k=10, **kwargs):
    truth = exact_items(vectors, queries, k)
    hits = idx.search(queries, k=k, unit="item", **kwargs)
    found = [{int(h.key[3:]) for h in q} for q in hits]
    return np.mean([len(f & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)])


@pytest.fixture(scope="module")
def corpus():
    vectors = clustered(12_000)
    queries = clustered(50, seed=1)
    return vectors, items_for(len(vectors)), queries


@pytest.mark.parametrize(
    ("kind", "minimum"), [("flat_ip", 1.0), ("ivf_flat", 0.9), ("ivf_pq", 0.6), ("hnsw", 0.9)]
)
def test_each_layout_against_exact_search(corpus, kind, minimum):
    vectors, items, queries = corpus
    idx = CaseIndex.build(vectors, items, MODEL, index_type=kind)
    assert idx.spec.kind == kind and idx.manifest.index_params["kind"] == kind
    assert recall_at_k(idx, vectors, queries) >= minimum


def test_per_query_search_parameters(corpus):
    vectors, items, queries = corpus
    idx = CaseIndex.build(vectors, items, MODEL, index_type="ivf_flat")
    nlist = idx.spec.nlist
    low = recall_at_k(idx, vectors, queries, nprobe=1)
    full = recall_at_k(idx, vectors, queries, nprobe=nlist)  # every list: exact
    assert full == 1.0 and low < full
    hnsw = CaseIndex.build(vectors, items, MODEL, index_type="hnsw")
    assert recall_at_k(hnsw, vectors, queries, ef_search=200) >= recall_at_k(
        hnsw, vectors, queries, ef_search=10
    )


@pytest.mark.parametrize("kind", ["flat_ip", "ivf_flat", "ivf_pq", "hnsw"])
def test_filters_return_k_when_k_match(corpus, kind):
    vectors, items, queries = corpus
    idx = CaseIndex.build(vectors, items, MODEL, index_type=kind)
    # A rare slice: bcc dermoscopic images, a quarter of a half of the rows.
    where = {"diagnosis": "bcc", "modality": ["dermoscopic"]}
    for unit in ("item", "case"):
        for hits in idx.search(queries[:10], k=25, unit=unit, where=where, nprobe=1, ef_search=8):
            assert len(hits) == 25
            assert all(h.item["diagnosis"] == "bcc" for h in hits)
            assert all(h.item["modality"] == "dermoscopic" for h in hits)
    # Only three items match: all three come back.
    where = {"key": ["img1", "img2", "img3"]}
    assert len(idx.search(queries[0], k=10, unit="item", where=where)[0]) == 3
    with pytest.raises(ValueError, match="lists no values"):
        idx.search(queries[0], where={"diagnosis": []})


def test_flat_filter_ranking_is_exact(corpus):
    vectors, items, queries = corpus
    idx = CaseIndex.build(vectors, items, MODEL)
    mask = np.array([item["diagnosis"] == "melanoma" for item in items])
    truth = exact_items(vectors, queries[:5], 10, mask)
    hits = idx.search(queries[:5], k=10, unit="item", where={"diagnosis": "melanoma"})
    assert [[int(h.key[3:]) for h in q] for q in hits] == truth.tolist()


@pytest.mark.parametrize("kind", ["flat_ip", "ivf_flat", "hnsw"])
def test_add_remove_replace_and_save(corpus, kind, tmp_path):
    vectors, items, queries = corpus
    first, rest = 10_000, vectors[10_000:]
    idx = CaseIndex.build(vectors[:first], items[:first], MODEL, index_type=kind)
    idx.add(rest, items[first:])
    assert len(idx) == len(vectors) and idx.manifest.count == len(vectors)
    with pytest.raises(ValueError, match="already indexed"):
        idx.add(rest[:1], items[first : first + 1])

    target = queries[0]
    best = idx.search(target, k=1, unit="case", nprobe=idx.spec.nlist or None)[0][0].case_id
    assert idx.remove([best]) == 2
    after = idx.search(target, k=5, unit="case")[0]
    assert best not in {h.case_id for h in after}
    with pytest.raises(ValueError, match="not in this index"):
        idx.remove([best])

    # Replace a case by a new image that sits exactly on the query.
    victim = after[-1].case_id
    new = [{"key": "fresh", "case_id": victim, "modality": "clinical", "diagnosis": "nevus"}]
    idx.replace(victim, target[None, :], new)
    top = idx.search(target, k=1, unit="item")[0][0]
    assert top.key == "fresh" and top.score == pytest.approx(1.0, abs=1e-4)
    assert [i["key"] for i in idx.case_items(victim)] == ["fresh"]

    loaded = CaseIndex.load(idx.save(tmp_path / "ix"), expected_model_id=MODEL)
    assert loaded.manifest == idx.manifest and len(loaded) == len(idx)
    assert loaded.search(target, k=1, unit="item")[0][0].key == "fresh"
    loaded.add(clustered(2, seed=9), items_for(2, offset=50_000))  # adds after a load too
    assert len(loaded) == len(idx) + 2


def test_small_collection_shrinks_or_falls_back(caplog):
    vectors = clustered(300)
    with caplog.at_level(logging.WARNING, logger="index.types"):
        tiny = CaseIndex.build(vectors[:100], items_for(100), MODEL, index_type="ivf_flat")
    assert tiny.spec.kind == "flat_ip" and "too few to train ivf_flat" in caplog.text
    small = CaseIndex.build(vectors, items_for(300), MODEL, index_type="ivf_flat")
    assert small.spec.kind == "ivf_flat" and small.spec.nlist == 300 // 39
    assert "nlist" in small.manifest.index_params["note"]
    pq = fit_to_size(IndexSpec("ivf_pq", nlist=64, pq_m=4, nprobe=4), PQ_MIN_TRAIN - 1)
    assert pq.kind == "ivf_flat" and "PQ" in pq.note
    assert len(small.search(vectors[0], k=300, unit="item")[0]) == 300


def test_auto_choice_follows_size_memory_and_recall():
    assert choose_spec(1_000, 256).kind == "flat_ip"
    assert choose_spec(1_000_000, 256).kind == "hnsw"
    assert choose_spec(1_000_000, 256, target_recall=0.8).kind == "ivf_flat"
    assert choose_spec(1_000_000, 256, memory_budget=200_000_000).kind == "ivf_pq"
    assert "auto" in choose_spec(1_000_000, 256).note


def test_filter_forms():
    from index.filters import allowed_rows

    items = [{"a": 1, "b": "x"}, {"a": 2}, {"a": 3, "b": "y"}]
    assert allowed_rows(items, None) is None
    assert allowed_rows(items, {"a": [1, 3]}).tolist() == [True, False, True]
    assert allowed_rows(items, {"b": "x"}).tolist() == [True, False, False]  # missing b: no
    assert allowed_rows(items, {"a": lambda v: v > 1, "b": "y"}).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="must map field names"):
        allowed_rows(items, [("a", 1)])


def test_refused_replace_loses_nothing_and_the_only_case_can_be_replaced(tmp_path):
    vectors = clustered(6)
    items = items_for(6)  # cases case0..case2, two images each
    idx = CaseIndex.build(vectors, items, MODEL)
    clash = [{"key": "img2", "case_id": "case0"}]  # img2 belongs to case1
    with pytest.raises(ValueError, match="belongs to another case"):
        idx.replace("case0", vectors[:1], clash)
    assert len(idx) == 6 and [i["key"] for i in idx.case_items("case0")] == ["img0", "img1"]
    with pytest.raises(ValueError, match="use remove"):
        idx.replace("case0", vectors[:0], [])

    solo = CaseIndex.build(vectors[:1], items[:1], MODEL, index_type="hnsw")
    solo.replace(
        "case0",
        vectors[1:3],
        [{"key": "n1", "case_id": "case0"}, {"key": "n2", "case_id": "case0"}],
    )
    assert [i["key"] for i in solo.case_items("case0")] == ["n1", "n2"]
    assert idx.remove(["case1", "case1"]) == 2  # a case named twice goes once
    assert idx.remove("case2") == 2 and idx.case_ids == ["case0"]  # a bare id is one case


def test_search_parameters_must_be_positive_and_odd_paths_load(tmp_path):
    vectors = clustered(50)
    idx = CaseIndex.build(vectors, items_for(50), MODEL)
    for bad in ({"nprobe": 0}, {"ef_search": -1}, {"nprobe": 1.5}):
        with pytest.raises(ValueError, match="positive integer"):
            idx.search(vectors[0], **bad)
    folder = idx.save(tmp_path / "my#index?v=1 %20")
    assert len(CaseIndex.load(folder)) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my#index?v=1 %20"]
