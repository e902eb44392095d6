"""Stream webdataset shards into training and validation batches."""

from __future__ import annotations

import json
import logging
import math
import random
from functools import partial
from pathlib import Path

import lightning as L
import open_clip
import torch
import webdataset as wds

from skinclip.data.atlas import ATLAS_4CLASS
from skinclip.data.images import decode_image
from skinclip.data.records import SPLITS
from skinclip.data.shards import every_shard, read_manifest, split_urls
from skinclip.model.towers import IMAGENET_MEAN, IMAGENET_STD, register_model_configs
from skinclip.train import balance
from skinclip.train.transforms import eval_transform, train_transform

logger = logging.getLogger(__name__)


class ShardDataModule(L.LightningDataModule):
    """Image-caption batches from the shards written by ``skinclip shards``.

    Each batch is a dict: ``images`` (B,3,H,W), ``tokens`` (B,L), ``captions``, ``labels`` (B,),
    ``modalities``, ``diagnoses`` and ``diagnosis_groups``. ``labels`` index
    :data:`ATLAS_4CLASS`, or are -1 for images outside those groups; ``diagnoses`` hold each
    sample's diagnosis (or ``label``), "" if none; ``diagnosis_groups`` its coarse group
    ("melanoma" for "melanoma (in situ)"), or the diagnosis where it has none.

    Args:
        shards: The folder holding ``manifest.json`` and ``<split>/shard-*.tar``.
        model_name: The open_clip config whose tokenizer to use.
        image_size: Input resolution of validation (and of the model, which the CLI links).
        train_image_size: Resolution of the training crops; ``None`` uses ``image_size``. A
            model may evaluate best above the resolution it trained at (see the README).
        train_splits: The shard splits to train on. Adding ``val`` to ``train`` is for a final
            fit once the recipe has been chosen on validation: the validation metrics of such a
            run are no longer held out.
        batch_size: Samples per batch on each device.
        num_workers: DataLoader workers; shards are divided among them (and among nodes).
        shuffle_buffer: Samples held in each worker's shuffle buffer; it fills before the first
            one leaves, so a buffer as large as a worker's share of an epoch shuffles it whole.
        resample: Draw shards with replacement (infinite stream cut into nominal epochs);
            useful when shards are few relative to workers x nodes. Always on for training
            under DDP, so that every process takes the same number of full batches.
        random_caption: Pick one of the stored caption phrasings at random for each sample.
        balance_power: Repeat-factor sampling strength for rare diagnosis groups in training
            (0 turns it off; see ``skinclip.train.balance``).
        mean: Normalisation mean of the image tower.
        std: Normalisation std of the image tower.
    """

    def __init__(
        self,
        shards: str,
        model_name: str = "SkinCLIP-EffNetLite0-MiniLM",
        image_size: int = 224,
        train_image_size: int | None = None,
        train_splits: tuple[str, ...] = ("train",),
        batch_size: int = 64,
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        resample: bool = False,
        random_caption: bool = True,
        balance_power: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        super().__init__()
        if (
            not train_splits
            or isinstance(train_splits, str)
            or not set(train_splits) <= set(SPLITS)
            or len(set(train_splits)) != len(train_splits)
        ):
            raise ValueError(
                f"data.train_splits must be a list of distinct split names out of "
                f"{list(SPLITS)}, such as [train]; got {train_splits!r}."
            )
        if train_image_size is not None and train_image_size < 1:
            raise ValueError(
                f"data.train_image_size must be a positive number of pixels; got "
                f"{train_image_size}. Leave it out to train at model.image_size."
            )
        self.save_hyperparameters()
        self.shards = Path(shards)
        self.manifest = read_manifest(self.shards)
        self.train_splits = tuple(train_splits)
        if "test" in self.train_splits:
            logger.warning(
                "Training on the test split (data.train_splits %s): no metric on it will be "
                "held out.",
                list(self.train_splits),
            )
        register_model_configs()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._repeat_factors: dict[str, float] | None = None

    def repeat_factors(self) -> dict[str, float]:
        """Per-group repeat factors of the training split (all 1 when balancing is off)."""
        if self._repeat_factors is None:
            self._repeat_factors = {}
            if self.hparams.balance_power > 0:
                counts = balance.count_groups(self.train_urls())
                self._repeat_factors = balance.repeat_factors(counts, self.hparams.balance_power)
                self._train_size = balance.expected_size(counts, self._repeat_factors)
                logger.info("Repeat factors by group: %s", self._repeat_factors)
        return self._repeat_factors

    def split_urls(self, split: str) -> list[str]:
        return split_urls(self.shards, split)

    def train_urls(self) -> list[str]:
        return [url for split in self.train_splits for url in self.split_urls(split)]

    def split_size(self, split: str) -> int:
        """Samples of a split as the manifest counts them."""
        return int(self.manifest["counts"]["split"].get(split, 0))

    def train_size(self) -> int:
        """Training samples per epoch, counting the repeats of balanced training."""
        if self.repeat_factors():
            return self._train_size
        return sum(self.split_size(split) for split in self.train_splits)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Optimizer-independent batch count of one epoch on each device."""
        return max(1, math.ceil(self.train_size() / (self.hparams.batch_size * world_size)))

    def _pipeline(self, split: str, train: bool) -> wds.WebDataset:
        hp = self.hparams
        if train:
            size = hp.train_image_size or hp.image_size
            if size != hp.image_size:
                logger.info(
                    "Training crops are %d px; validation runs at %d px.", size, hp.image_size
                )
            transform = train_transform(size, hp.mean, hp.std)
        else:
            transform = eval_transform(hp.image_size, hp.mean, hp.std)
        world_size = self.trainer.world_size if self.trainer is not None else 1
        # Under DDP every process must take the same number of equal-sized steps (ClipLoss
        # gathers features across them), which shards split by node cannot promise: each
        # process resamples shards and drops its last partial batch instead.
        equal_steps = train and world_size > 1
        if equal_steps and not hp.resample:
            logger.info("Training on %d processes: shards are resampled per process.", world_size)
        resample = train and (hp.resample or equal_steps)
        dataset = wds.WebDataset(
            self.train_urls() if train else self.split_urls(split),
            resampled=resample,
            # Resampling draws shards at random already; webdataset rejects a shuffle on top.
            shardshuffle=100 if train and not resample else False,
            # Every process validates on the whole split: the metrics need all of it, and an
            # uneven split could leave a process without batches while the others wait for it.
            nodesplitter=None if resample else (wds.split_by_node if train else every_shard),
            workersplitter=None if resample else wds.split_by_worker,
            handler=wds.warn_and_continue,
            empty_check=False,
        )
        if train:
            factors = self.repeat_factors()
            if factors:
                dataset = dataset.compose(partial(balance.repeat_rare, factors=factors))
            # Fill the buffer before the first sample leaves it. Shards keep their source's
            # order (the atlas lists cases by diagnosis), and webdataset's default start-up of
            # 100 samples made each epoch's first batches nearly one diagnosis each.
            dataset = dataset.shuffle(hp.shuffle_buffer, initial=hp.shuffle_buffer)
        dataset = dataset.map(lambda s: self._to_sample(s, transform, train)).batched(
            hp.batch_size, partial=not equal_steps, collation_fn=_collate
        )
        dataset = dataset.map(self._add_tokens)
        if resample:
            # A resampled stream never ends; cut it into epochs of the nominal length. Every
            # worker draws its own stream, so each supplies its share of the batches.
            workers = max(1, hp.num_workers)
            dataset = dataset.with_epoch(math.ceil(self.steps_per_epoch(world_size) / workers))
        return dataset

    def _to_sample(self, sample: dict, transform, train: bool) -> tuple:
        meta = json.loads(sample["json"])
        captions = meta.get("captions") or [sample["txt"].decode("utf-8")]
        caption = random.choice(captions) if train and self.hparams.random_caption else captions[0]
        # Decoding at a reduced size is faster; it must still cover the larger resolution.
        min_side = max(self.hparams.image_size, self.hparams.train_image_size or 0)
        image = transform(decode_image(sample["jpg"], min_side=min_side))
        group = meta.get("diagnosis_group")
        label = ATLAS_4CLASS.index(group) if group in ATLAS_4CLASS else -1
        # Label CSVs and folder trees name the class in ``label`` rather than ``diagnosis``.
        diagnosis = meta.get("diagnosis") or meta.get("label") or ""
        return (
            image,
            caption,
            label,
            meta.get("modality"),
            diagnosis,
            balance.diagnosis_group_of(meta),
        )

    def _loader(self, split: str, train: bool) -> wds.WebLoader:
        return wds.WebLoader(
            self._pipeline(split, train),
            batch_size=None,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> wds.WebLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> wds.WebLoader:
        if "val" in self.train_splits:
            logger.warning(
                "Validating on the 'val' split, which this run also trains on: its val/ "
                "metrics are not held out. A final fit (configs/final_fit.yaml) skips them."
            )
        return self._loader("val", train=False)

    def _add_tokens(self, batch: dict) -> dict:
        # Tokenising here runs in the loader workers instead of the training process. The
        # padding is trimmed by the module, which knows whether its text tower allows it.
        batch["tokens"] = self.tokenizer(batch["captions"])  # (B, context length)
        return batch


def _collate(samples: list[tuple]) -> dict:
    images, captions, labels, modalities, diagnoses, groups = zip(*samples, strict=True)
    return {
        "images": torch.stack(images),  # (B, 3, H, W)
        "captions": list(captions),
        "labels": torch.tensor(labels),
        "modalities": list(modalities),
        "diagnoses": list(diagnoses),
        "diagnosis_groups": list(groups),
    }
