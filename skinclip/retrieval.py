"""Case retrieval with a SkinCLIP model: build a FAISS case index and query it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from index import CaseIndex, Hit
from skinclip.encode import encode_split, encode_texts, iter_image_embeds
from skinclip.model.towers import SkinCLIPBundle, model_checksum

logger = logging.getLogger(__name__)

# Metadata kept beside each indexed image; everything a result row shows.
ITEM_FIELDS = ("case_id", "modality", "diagnosis", "location", "sex", "source", "split")
# What an index holds: image embeddings (image/text -> case) or caption embeddings
# (image -> caption).
CONTENTS = ("images", "captions")


def _items(encoded, content: str) -> list[dict]:
    items = []
    for meta, caption in zip(encoded.metas, encoded.captions, strict=True):
        item = {field: meta.get(field) for field in ITEM_FIELDS}
        key = meta["key"] if content == "images" else f"{meta['key']}#caption"
        item.update(key=key, caption=caption, image_path=meta.get("image_path"), content=content)
        items.append(item)
    return items


def encode_for_index(
    bundle: SkinCLIPBundle,
    shards: Path,
    splits: tuple[str, ...],
    content: str = "images",
    **encode_kwargs,
) -> tuple[np.ndarray, list[dict]]:
    """Embeddings and item rows of shard splits: image embeddings, or (``content=
    "captions"``) embeddings of each image's canonical caption, for image-to-caption search.
    """
    if content not in CONTENTS:
        raise ValueError(f"content must be one of {CONTENTS}; got {content!r}.")
    embeds, items = [], []
    for split in splits:
        encoded = encode_split(bundle, shards, split, **encode_kwargs)
        vectors = encoded.image_embeds if content == "images" else encoded.text_embeds
        embeds.append(vectors.numpy())
        items += _items(encoded, content)
    return np.concatenate(embeds), items


def build_case_index(
    bundle: SkinCLIPBundle,
    shards: Path,
    splits: tuple[str, ...] = ("train",),
    content: str = "images",
    index_type: str = "flat_ip",
    memory_budget: int | None = None,
    target_recall: float = 0.95,
    **encode_kwargs,
) -> CaseIndex:
    """Index the given shard splits, with captions and metadata.

    Only training cases are indexed by default, so test images never find themselves. See
    :meth:`index.CaseIndex.build` for the index types.
    """
    embeds, items = encode_for_index(bundle, shards, splits, content, **encode_kwargs)
    return CaseIndex.build(
        embeds,
        items,
        model_id=bundle.model_id,
        model_checksum=model_checksum(bundle),
        index_type=index_type,
        memory_budget=memory_budget,
        target_recall=target_recall,
    )


def add_to_index(
    index: CaseIndex,
    bundle: SkinCLIPBundle,
    shards: Path,
    splits: tuple[str, ...],
    replace: bool = False,
    **encode_kwargs,
) -> dict:
    """Append the cases of shard splits; with ``replace``, cases already indexed are swapped
    for their new images, otherwise they are an error.

    Returns:
        Counts of added and replaced cases.
    """
    content = index.item(0).get("content", "images")
    embeds, items = encode_for_index(bundle, shards, splits, content, **encode_kwargs)
    existing = set(index.case_ids)
    by_case: dict[str, list[int]] = {}
    for row, item in enumerate(items):
        by_case.setdefault(item["case_id"], []).append(row)
    clashes = sorted(existing & set(by_case))
    if clashes and not replace:
        raise ValueError(
            f"{len(clashes)} case(s) are already indexed, e.g. {clashes[0]!r}; pass --replace "
            "to swap them for the new images."
        )
    for case_id in clashes:
        rows = by_case[case_id]
        index.replace(case_id, embeds[rows], [items[r] for r in rows])
    new_rows = [r for case_id, rows in by_case.items() if case_id not in existing for r in rows]
    if new_rows:
        index.add(embeds[new_rows], [items[r] for r in new_rows])
    return {"added": len(by_case) - len(clashes), "replaced": len(clashes)}


def load_case_index(folder: Path, bundle: SkinCLIPBundle) -> CaseIndex:
    """Load an index folder and check it was built with ``bundle``'s model."""
    return CaseIndex.load(
        folder,
        expected_model_id=bundle.model_id,
        expected_dim=int(encode_texts(bundle, ["skin"]).shape[1]),
        expected_model_checksum=model_checksum(bundle),
    )


def search_text(
    index: CaseIndex, bundle: SkinCLIPBundle, query: str, k: int = 5, **search_kwargs
) -> list[Hit]:
    """Cases whose images best match a free-text description."""
    return index.search(encode_texts(bundle, [query]).numpy(), k=k, **search_kwargs)[0]


def search_image(
    index: CaseIndex, bundle: SkinCLIPBundle, image: Path, k: int = 5, **search_kwargs
) -> list[Hit]:
    """Cases (or, on a caption index, captions) most similar to one image file.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a readable image.
    """
    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"Image not found: {image}")
    for embeds, _, errors in iter_image_embeds(bundle, [image], num_workers=0, progress=False):
        if errors[0]:
            raise ValueError(f"Cannot read {image}: {errors[0]}. Give a JPEG or PNG image.")
        return index.search(embeds.numpy(), k=k, **search_kwargs)[0]
    raise AssertionError("iter_image_embeds yielded nothing for one path")
