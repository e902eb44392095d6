"""SkinVL training data: atlas images from the SkinCLIP shards with generated questions.

Stage ``align`` pairs each image with one of its captions ("Describe this lesion."); stage
``instruct`` with one of its question/answer pairs, drawn afresh every time the image is
seen: MM-Skin's own pairs for shards written from its VQA CSV or LLaVA JSON, pairs generated
from the annotations for atlas shards. The shards carry the case-level split of SkinCLIP,
so no test case is used.
"""

from __future__ import annotations

import json
import random
from functools import partial
from pathlib import Path

import lightning as L
import torch
import webdataset as wds

from skinclip.data.images import decode_image
from skinclip.data.shards import split_urls
from skinclip.train.transforms import eval_transform, train_transform
from skinvl.qa import PHRASINGS, qa_pairs

STAGES = ("align", "instruct")


def sample_pair(meta: dict, stage: str, rng: random.Random) -> tuple[str, str] | None:
    """(question, answer) for one image; None when the image has nothing to ask about."""
    if stage == "align":
        captions = meta.get("captions") or []
        if not captions:
            return None
        return rng.choice(PHRASINGS["describe"]), rng.choice(captions)
    # Shards written from MM-Skin's VQA CSV or LLaVA JSON carry their own pairs under "qa";
    # atlas shards get pairs generated from the case's annotations.
    given = [
        (q["question"], q["answer"])
        for q in meta.get("qa") or []
        if q.get("question") and q.get("answer")
    ]
    if given:
        return rng.choice(given)
    pairs = qa_pairs(meta, meta.get("modality") or "dermoscopic", all_phrasings=True)
    if not pairs:
        return None
    pair = rng.choice(pairs)
    return pair.question, pair.answer


def _to_sample(sample: dict, transform, stage: str, image_size: int, rng: random.Random):
    meta = json.loads(sample["json"])
    pair = sample_pair(meta, stage, rng)
    if pair is None:
        return None
    return transform(decode_image(sample["jpg"], min_side=image_size)), *pair


def _collate(samples: list[tuple]) -> dict:
    images, questions, answers = zip(*samples, strict=True)
    return {"images": torch.stack(images), "questions": list(questions), "answers": list(answers)}


class QADataModule(L.LightningDataModule):
    """Streams (image, question, answer) batches from SkinCLIP shards.

    Args:
        shards: A shard folder written by ``skinclip shards``.
        stage: ``align`` or ``instruct``.
        image_size: Input resolution (the SkinCLIP model's).
        batch_size: Batch size.
        num_workers: Loader processes.
        seed: Seeds the question draw.
    """

    def __init__(
        self,
        shards: str,
        stage: str = "instruct",
        image_size: int = 224,
        batch_size: int = 16,
        num_workers: int = 2,
        seed: int = 0,
    ):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {stage!r}.")
        self.save_hyperparameters()
        self.shards = Path(shards)

    def _loader(self, split: str, train: bool) -> wds.WebLoader:
        hp = self.hparams
        transform = (train_transform if train else eval_transform)(hp.image_size)
        rng = random.Random(hp.seed)
        dataset = (
            wds.WebDataset(
                split_urls(self.shards, split),
                shardshuffle=100 if train else False,
                nodesplitter=wds.split_by_node,
                workersplitter=wds.split_by_worker,
                handler=wds.warn_and_continue,
                empty_check=False,
            )
            .shuffle(500 if train else 0)
            .map(
                partial(
                    _to_sample,
                    transform=transform,
                    stage=hp.stage,
                    image_size=hp.image_size,
                    rng=rng,
                )
            )
            .select(lambda s: s is not None)
            .batched(hp.batch_size, partial=True, collation_fn=_collate)
        )
        return wds.WebLoader(dataset, batch_size=None, num_workers=hp.num_workers)

    def train_dataloader(self) -> wds.WebLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> wds.WebLoader:
        return self._loader("val", train=False)
