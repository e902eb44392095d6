"""Case retrieval with a model: index from shards, query, and model/index mismatch."""

import numpy as np
import pytest
import torch

from skinclip.encode import encode_split
from skinclip.model.towers import create_skinclip
from skinclip.retrieval import build_case_index, load_case_index, search_image, search_text


@pytest.fixture(scope="module")
def tiny_bundle():
    torch.manual_seed(0)
    return create_skinclip(image_size=32, pretrained_towers=False)


def test_index_search_matches_exact_numpy(tiny_bundle, tiny_shards, tmp_path):
    index = build_case_index(tiny_bundle, tiny_shards, ("train",), num_workers=0)
    index.save(tmp_path / "index")
    loaded = load_case_index(tmp_path / "index", tiny_bundle)

    train = encode_split(tiny_bundle, tiny_shards, "train", num_workers=0)
    query = encode_split(tiny_bundle, tiny_shards, "test", num_workers=0).image_embeds[:4]
    hits = loaded.search(query.numpy(), k=5, unit="item")
    exact = query.numpy() @ train.image_embeds.numpy().T  # (4, N)
    for row, row_hits in enumerate(hits):
        order = np.argsort(-exact[row])[:5]
        assert [h.key for h in row_hits] == [train.metas[i]["key"] for i in order]
        assert np.allclose([h.score for h in row_hits], exact[row][order], atol=1e-5)


def test_text_and_image_search_return_cases_with_captions(tiny_bundle, tiny_shards, make_image):
    index = build_case_index(tiny_bundle, tiny_shards, ("train",), num_workers=0)
    hits = search_text(index, tiny_bundle, "melanoma on the back", k=3)
    assert len({h.case_id for h in hits}) == 3
    assert all(h.item["caption"] and h.item["diagnosis"] for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    image_hits = search_image(index, tiny_bundle, make_image("q.png", fmt="PNG"), k=2)
    assert len(image_hits) == 2


def test_bad_queries_are_clear_errors(tiny_bundle, tiny_shards, tmp_path):
    index = build_case_index(tiny_bundle, tiny_shards, ("train",), num_workers=0)
    with pytest.raises(ValueError, match="empty"):
        search_text(index, tiny_bundle, "   ")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        search_image(index, tiny_bundle, tmp_path / "nope.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="broken.jpg"):
        search_image(index, tiny_bundle, broken)


def test_index_refuses_another_model(tiny_bundle, tiny_shards, tmp_path):
    build_case_index(tiny_bundle, tiny_shards, ("train",), num_workers=0).save(tmp_path / "ix")
    other = create_skinclip(image_size=32, pretrained_towers=False)
    with torch.no_grad():
        other.model.text.proj.weight.add_(0.01)  # the same architecture, other weights
    with pytest.raises(ValueError, match="checksum"):
        load_case_index(tmp_path / "ix", other)


def test_index_refuses_another_resolution(tiny_bundle, tiny_shards, tmp_path):
    build_case_index(tiny_bundle, tiny_shards, ("train",), num_workers=0).save(tmp_path / "ix")
    torch.manual_seed(0)
    same_weights_other_size = create_skinclip(image_size=48, pretrained_towers=False)
    same_weights_other_size.model.load_state_dict(tiny_bundle.model.state_dict())
    with pytest.raises(ValueError, match="checksum"):
        load_case_index(tmp_path / "ix", same_weights_other_size)
