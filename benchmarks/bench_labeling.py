"""Labeling throughput of ``skinclip zeroshot`` against the loop anyone would write.

Both label the same atlas images with the same model weights and the same classifier, side by
side in one run:

- baseline: the model loaded with ``open_clip.create_model_and_transforms`` from an exported
  folder, then a plain loop: PIL open, the open_clip preprocess, batches of 64,
  ``encode_image``, softmax over the class embeddings;
- ours: :func:`skinclip.labeling.label_images`, the code behind ``skinclip zeroshot``, which
  also writes the CSV.

Prints images/s for each, the ratio, and how many top-1 labels agree.

Run: python benchmarks/bench_labeling.py --data ../shared/data [--images 512]
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from PIL import Image

from skinclip.labeling import label_images
from skinclip.labels import get_label_set
from skinclip.model.towers import create_skinclip, export_open_clip
from skinclip.quickstart import find_atlas
from skinclip.zeroshot import build_classifier, classify

logger = logging.getLogger("bench_labeling")
BATCH = 64


@torch.no_grad()
def plain_loop(model, preprocess, paths: list[Path], classifier: torch.Tensor) -> list[int]:
    scale = model.logit_scale.exp().item()
    predictions = []
    for start in range(0, len(paths), BATCH):
        images = [preprocess(Image.open(p).convert("RGB")) for p in paths[start : start + BATCH]]
        embeds = model.encode_image(torch.stack(images), normalize=True)
        predictions += classify(embeds, classifier, scale).argmax(dim=1).tolist()
    return predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder holding derm7pt/")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    atlas = find_atlas(Path(args.data) if args.data else None)
    paths = sorted((atlas / "images").rglob("*.jpg"))[: args.images]
    label_set = get_label_set("atlas4")
    bundle = create_skinclip(image_size=224)
    classifier = build_classifier(bundle.model, bundle.tokenizer, label_set, "dermoscopic")

    with tempfile.TemporaryDirectory() as tmp:
        export = export_open_clip(bundle, Path(tmp) / "export")
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{export}")
        model.eval()
        plain_loop(model, preprocess, paths[:BATCH], classifier)  # warm-up
        start = time.perf_counter()
        baseline_labels = plain_loop(model, preprocess, paths, classifier)
        baseline = len(paths) / (time.perf_counter() - start)

        out = Path(tmp) / "labels.csv"
        label_images(bundle, paths[:BATCH], label_set, out, k=1, modality="dermoscopic")
        out.unlink()
        start = time.perf_counter()
        label_images(
            bundle, paths, label_set, out, k=1, modality="dermoscopic", num_workers=args.workers
        )
        ours = len(paths) / (time.perf_counter() - start)
        with out.open(newline="") as f:
            our_labels = [label_set.names.index(row["label1"]) for row in csv.DictReader(f)]

    agree = sum(a == b for a, b in zip(baseline_labels, our_labels, strict=True))
    logger.info(
        "images: %d atlas JPEGs, batch %d, %d threads", len(paths), BATCH, torch.get_num_threads()
    )
    logger.info("plain open_clip loop : %6.1f images/s", baseline)
    logger.info(
        "skinclip zeroshot    : %6.1f images/s  (%.2fx the plain loop)", ours, ours / baseline
    )
    logger.info("identical top-1 labels: %d / %d", agree, len(paths))


if __name__ == "__main__":
    main()
