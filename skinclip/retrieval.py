"""Case retrieval with a SkinCLIP model: build a FAISS case index and query it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from index import CaseIndex, Hit
from skinclip.encode import encode_split, encode_texts, iter_image_embeds
from skinclip.model.towers import SkinCLIPBundle

logger = logging.getLogger(__name__)

# Metadata kept beside each indexed image; everything a result row shows.
ITEM_FIELDS = ("case_id", "modality", "diagnosis", "location", "sex", "source", "split")


def model_checksum(bundle: SkinCLIPBundle) -> str:
    """A short fingerprint of the weights and input resolution.

    An index refuses a model it was not built with; the resolution counts because the same
    weights embed a 128 px and a 224 px view of an image differently.
    """
    digest = hashlib.sha256()
    digest.update(repr(bundle.model.visual.image_size).encode())
    for name, tensor in sorted(bundle.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()[:16]


def build_case_index(
    bundle: SkinCLIPBundle, shards: Path, splits: tuple[str, ...] = ("train",), **encode_kwargs
) -> CaseIndex:
    """Index the image embeddings of the given shard splits, with captions and metadata.

    Only training cases are indexed by default, so test images never find themselves.
    """
    embeds, items = [], []
    for split in splits:
        encoded = encode_split(bundle, shards, split, **encode_kwargs)
        embeds.append(encoded.image_embeds.numpy())
        for meta, caption in zip(encoded.metas, encoded.captions, strict=True):
            item = {field: meta.get(field) for field in ITEM_FIELDS}
            item.update(key=meta["key"], caption=caption, image_path=meta.get("image_path"))
            items.append(item)
    return CaseIndex.build(
        np.concatenate(embeds),
        items,
        model_id=bundle.model_id,
        model_checksum=model_checksum(bundle),
    )


def load_case_index(folder: Path, bundle: SkinCLIPBundle) -> CaseIndex:
    """Load an index folder and check it was built with ``bundle``'s model."""
    return CaseIndex.load(
        folder,
        expected_model_id=bundle.model_id,
        expected_dim=int(encode_texts(bundle, ["skin"]).shape[1]),
        expected_model_checksum=model_checksum(bundle),
    )


def search_text(index: CaseIndex, bundle: SkinCLIPBundle, query: str, k: int = 5) -> list[Hit]:
    """Cases whose images best match a free-text description."""
    return index.search(encode_texts(bundle, [query]).numpy(), k=k)[0]


def search_image(index: CaseIndex, bundle: SkinCLIPBundle, image: Path, k: int = 5) -> list[Hit]:
    """Cases most similar to one image file.

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
        return index.search(embeds.numpy(), k=k)[0]
    raise AssertionError("iter_image_embeds yielded nothing for one path")
