"""Turn shards and image files into embeddings with a loaded model.

Images are decoded at full size here, unlike in training: a reduced-size JPEG decode is faster
but shifts pixels slightly, and evaluation and labeling must give exactly the predictions of
the model's own open_clip preprocessing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import webdataset as wds
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from skinclip.data.images import decode_image
from skinclip.data.shards import split_urls
from skinclip.model.towers import SkinCLIPBundle, as_model_input

logger = logging.getLogger(__name__)


@dataclass
class EncodedSplit:
    """Embeddings of every sample of one shard split, row-aligned.

    Attributes:
        image_embeds: (N, D) L2-normalised image embeddings.
        text_embeds: (N, D) L2-normalised embeddings of each sample's canonical caption.
        metas: Per-sample metadata as stored in the shards (``json``), with ``key`` added.
        captions: The canonical caption of each sample.
    """

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    metas: list[dict] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)


@torch.no_grad()
def encode_split(
    bundle: SkinCLIPBundle,
    shards: Path,
    split: str,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    limit: int | None = None,
) -> EncodedSplit:
    """Encode the images and canonical captions of one split of a shard folder."""
    preprocess = bundle.preprocess_val

    def to_sample(sample: dict) -> tuple:
        meta = json.loads(sample["json"])
        meta["key"] = sample["__key__"]
        caption = sample["txt"].decode("utf-8")
        return preprocess(decode_image(sample["jpg"])), caption, meta

    dataset = wds.WebDataset(
        split_urls(shards, split),
        shardshuffle=False,
        workersplitter=wds.split_by_worker,
        empty_check=False,
    ).map(to_sample)
    if limit:
        dataset = dataset.slice(limit)
    loader = DataLoader(
        dataset.batched(batch_size, collation_fn=_collate, partial=True),
        batch_size=None,
        num_workers=num_workers,
    )
    model = bundle.model.to(device).eval()
    image_chunks, text_chunks, metas, captions = [], [], [], []
    for images, batch_captions, batch_metas in tqdm(loader, desc=f"encode {split}", leave=False):
        image_chunks.append(
            model.encode_image(as_model_input(images, device), normalize=True).float().cpu()
        )
        tokens = bundle.tokenizer(list(batch_captions)).to(device)
        text_chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
        metas.extend(batch_metas)
        captions.extend(batch_captions)
    if not metas:
        raise ValueError(f"The '{split}' shards under {shards} hold no samples.")
    return EncodedSplit(torch.cat(image_chunks), torch.cat(text_chunks), metas, captions)


def _collate(samples: list[tuple]) -> tuple:
    images, captions, metas = zip(*samples, strict=True)
    return torch.stack(images), list(captions), list(metas)  # images: (B, 3, H, W)


@torch.no_grad()
def encode_texts(
    bundle: SkinCLIPBundle, texts: Sequence[str], device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(N, D) normalised embeddings of ``texts``; an empty text is a user error."""
    for i, text in enumerate(texts):
        if not text or not text.strip():
            which = "The text query" if len(texts) == 1 else f"Text query {i + 1} of {len(texts)}"
            raise ValueError(f"{which} is empty; give a description such as 'melanoma'.")
    tokens = bundle.tokenizer(list(texts)).to(device)
    return bundle.model.to(device).eval().encode_text(tokens, normalize=True).float().cpu()


class ImageFiles(Dataset):
    """Image files for a DataLoader; unreadable files become error entries, not crashes."""

    def __init__(self, paths: Sequence[Path], preprocess):
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple:
        path = self.paths[i]
        try:
            data = path.read_bytes()
            if not data:
                return None, str(path), "empty file (0 bytes)"
            image = decode_image(data)
            return self.preprocess(image), str(path), ""
        except FileNotFoundError:
            return None, str(path), "file not found"
        except UnidentifiedImageError:
            return None, str(path), "unreadable image: not an image format PIL knows"
        except (OSError, Image.DecompressionBombError) as err:
            return None, str(path), f"unreadable image: {err}"


def _collate_files(items: list[tuple]) -> tuple:
    good = [x for x, _, _ in items if x is not None]
    images = torch.stack(good) if good else None  # (B_readable, 3, H, W)
    return images, [p for _, p, _ in items], [e for _, _, e in items]


@torch.no_grad()
def iter_image_embeds(
    bundle: SkinCLIPBundle,
    paths: Sequence[Path],
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = True,
):
    """Yield ``(image_embeds, paths, errors)`` batch by batch, in input order.

    ``paths`` and ``errors`` cover every file of the batch; ``errors[i]`` is empty for a
    readable file, else the reason it could not be read. ``image_embeds`` holds one
    normalised row per readable file, in the same order.
    """
    dataset = ImageFiles(paths, bundle.preprocess_val)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_files
    )
    model = bundle.model.to(device).eval()
    for images, batch_paths, errors in tqdm(loader, desc="encode images", disable=not progress):
        embeds = (
            model.encode_image(as_model_input(images, device), normalize=True).float().cpu()
            if images is not None
            else torch.empty(0)
        )
        yield embeds, batch_paths, errors
