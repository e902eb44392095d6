"""LightningModule that trains a SkinCLIP model with open_clip's contrastive loss."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from open_clip.loss import ClipLoss
from transformers import PreTrainedModel

from skinclip.eval.classification import balanced_accuracy
from skinclip.labels import get_label_set
from skinclip.metrics import retrieval_recall
from skinclip.model.towers import (
    DEFAULT_MODEL,
    as_model_input,
    create_skinclip,
    lock_text_tower,
)
from skinclip.train.diagnosis_loss import diagnosis_loss
from skinclip.train.padding import pad_token_id, trim_padding, trims_padding
from skinclip.zeroshot import classify_by_modality

logger = logging.getLogger(__name__)

# The batch entry (see ShardDataModule) that the diagnosis term reads at each level.
_DIAGNOSIS_BATCH_KEYS = {"diagnosis": "diagnoses", "group": "diagnosis_groups"}
# Beyond a few units the adjustment swamps the image-text scores (a batch share of 1/32 moves a
# logit by 3.5 per unit); far beyond, the logits overflow float32.
MAX_LOGIT_ADJUSTMENT = 10.0


class SkinCLIPModule(L.LightningModule):
    """Contrastive image-text training.

    Args:
        model_name: open_clip config name (see ``skinclip.model``).
        pretrained: Optional pretrained tag or checkpoint to start from.
        image_size: Input resolution.
        pretrained_towers: Start our configs from the shipped ImageNet / MiniLM weights.
        lr: Peak learning rate for newly initialised parts (projections, ``logit_scale``).
        trunk_lr: Peak learning rate for pretrained tower weights; lower, so fine-tuning
            adapts them without erasing what they learned.
        weight_decay: AdamW decay on matrices; norms, biases and ``logit_scale`` get none.
        warmup_steps: Linear warmup before cosine decay.
        min_lr_ratio: The cosine schedule ends at this fraction of the peak.
        lock_image: Freeze the image tower except its last ``image_unlocked_groups`` groups.
        image_unlocked_groups: Trunk groups left trainable when ``lock_image``.
        lock_text: Freeze the text transformer except its last ``text_unlocked_layers`` layers
            (the projection always trains).
        text_unlocked_layers: Transformer layers left trainable when ``lock_text``.
        max_steps_hint: Total optimizer steps for the schedule; 0 derives it from the trainer.
        fixed_logit_scale: Hold the contrastive temperature's inverse at this value, in
            (0, 100], instead of learning it from the model's initial value.
        diagnosis_loss_weight: Weight of the auxiliary diagnosis-caption loss added to ClipLoss
            (see ``skinclip.train.diagnosis_loss``); 0 trains with ClipLoss alone.
        diagnosis_loss_level: What the diagnosis term tells apart: ``"diagnosis"``, each
            diagnosis as the metadata writes it ("melanoma (in situ)", "clark nevus"), or
            ``"group"``, its coarse group ("melanoma", "nevus"; diagnoses outside a group stay
            themselves), so that subtypes of one group are not pushed apart.
        diagnosis_logit_adjustment: Strength of the diagnosis term's logit adjustment (see
            ``skinclip.train.diagnosis_loss``), which favours rare diagnoses as balanced
            accuracy does; 0 turns it off.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | None = None,
        image_size: int = 224,
        pretrained_towers: bool = True,
        lr: float = 1e-3,
        trunk_lr: float = 2e-4,
        weight_decay: float = 0.05,
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.05,
        lock_image: bool = False,
        image_unlocked_groups: int = 0,
        lock_text: bool = True,
        text_unlocked_layers: int = 0,
        max_steps_hint: int = 0,
        fixed_logit_scale: float | None = None,
        diagnosis_loss_weight: float = 0.0,
        diagnosis_loss_level: Literal["diagnosis", "group"] = "diagnosis",
        diagnosis_logit_adjustment: float = 0.0,
    ):
        super().__init__()
        # Checked before the towers load, so a bad value fails at once.
        if not (math.isfinite(diagnosis_loss_weight) and diagnosis_loss_weight >= 0):
            raise ValueError(
                "model.diagnosis_loss_weight must be a finite number, 0 or more; got "
                f"{diagnosis_loss_weight}. 0 trains with ClipLoss alone."
            )
        adjustment = diagnosis_logit_adjustment
        if not (
            isinstance(adjustment, int | float)
            and not isinstance(adjustment, bool)
            and 0 <= adjustment <= MAX_LOGIT_ADJUSTMENT
        ):
            raise ValueError(
                "model.diagnosis_logit_adjustment must be a number from 0 to "
                f"{MAX_LOGIT_ADJUSTMENT}; got {adjustment!r}. 1 is the usual strength, 0 turns "
                "the adjustment off."
            )
        if not isinstance(diagnosis_loss_level, str) or (
            diagnosis_loss_level not in _DIAGNOSIS_BATCH_KEYS
        ):
            raise ValueError(
                "model.diagnosis_loss_level must be one of "
                f"{', '.join(map(repr, _DIAGNOSIS_BATCH_KEYS))}; got {diagnosis_loss_level!r}."
            )
        if fixed_logit_scale is not None and not 0 < fixed_logit_scale <= 100:
            raise ValueError(
                f"model.fixed_logit_scale must be in (0, 100]; got {fixed_logit_scale}. Leave it "
                "out to learn the temperature."
            )
        if pretrained and Path(pretrained).is_file():
            # Recorded absolute, so that what the starting weights saw can be traced from any
            # folder (skinclip.model.towers.trained_splits).
            pretrained = str(Path(pretrained).resolve())
        self.save_hyperparameters()
        bundle = create_skinclip(model_name, pretrained, image_size, pretrained_towers)
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.preprocess_val = bundle.preprocess_val
        self.set_training_modes()
        self._lock_towers()
        if fixed_logit_scale is not None:
            with torch.no_grad():
                self.model.logit_scale.fill_(math.log(fixed_logit_scale))
            self.model.logit_scale.requires_grad_(False)
        self.loss_fn = ClipLoss()
        self._pad_id = pad_token_id(self.tokenizer)
        self._trim_padding = trims_padding(self.model)
        self._warned_no_diagnoses = False
        self._warned_no_groups = False
        self._val_outputs: list[dict] = []

    def set_training_modes(self) -> None:
        """Put the model in the modes it trains in: all of it in training mode except a Hugging
        Face text transformer, which trains without dropout."""
        # from_pretrained leaves that transformer in eval mode and every recipe in the README
        # was measured so; a model built from a checkpoint or random weights trains the same.
        self.model.train()
        transformer = getattr(getattr(self.model, "text", None), "transformer", None)
        if isinstance(transformer, PreTrainedModel):
            transformer.eval()

    def _lock_towers(self) -> None:
        hp = self.hparams
        if hp.lock_image:
            self.model.lock_image_tower(unlocked_groups=hp.image_unlocked_groups)
        if hp.lock_text:
            lock_text_tower(self.model, hp.text_unlocked_layers)

    def setup(self, stage: str) -> None:
        # Gather features from every process so each sees the whole global batch as negatives.
        self.loss_fn = ClipLoss(
            local_loss=False,
            gather_with_grad=True,
            rank=self.global_rank,
            world_size=self.trainer.world_size if self._trainer else 1,
        )

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        image_embeds = self.model.encode_image(as_model_input(images, self.device), normalize=True)
        text_embeds = self.model.encode_text(self._trimmed(tokens), normalize=True)  # (B, D)
        return image_embeds, text_embeds

    def training_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The loss to minimise on a training batch (``loss``) and its parts: ``clip`` and,
        when the diagnosis term is on and the batch holds two diagnoses or more, ``diagnosis``.
        """
        image_embeds, text_embeds = self(batch["images"], batch["tokens"])
        logit_scale = self.model.logit_scale.exp()
        losses = {"clip": self.loss_fn(image_embeds, text_embeds, logit_scale)}
        weight = self.hparams.diagnosis_loss_weight
        key = self._diagnosis_key(batch) if weight > 0 else ""
        if key in batch:
            dx_loss = diagnosis_loss(
                self.model,
                self._tokenize,
                image_embeds,
                batch[key],
                batch["modalities"],
                logit_scale,
                self.hparams.diagnosis_logit_adjustment,
            )
            if dx_loss is not None:
                losses["diagnosis"] = dx_loss
            elif not self._warned_no_diagnoses:
                self._warned_no_diagnoses = True
                logger.warning(
                    "A training batch holds fewer than two distinct %s (all its images share "
                    "one, or the shards give none), so that step trains on ClipLoss alone. "
                    "Said once; small batches of a few diagnoses do this now and then.",
                    "diagnosis groups" if key == "diagnosis_groups" else "diagnoses",
                )
        losses["loss"] = losses["clip"] + weight * losses.get("diagnosis", 0.0)
        return losses

    def _diagnosis_key(self, batch: dict) -> str:
        """The batch entry the diagnosis term reads: the groups at ``group`` level, unless the
        loader gives none (a loader of its own), when the diagnoses stand in, said once."""
        key = _DIAGNOSIS_BATCH_KEYS[self.hparams.diagnosis_loss_level]
        if key == "diagnosis_groups" and key not in batch and "diagnoses" in batch:
            if not self._warned_no_groups:
                self._warned_no_groups = True
                logger.warning(
                    "Training batches carry no 'diagnosis_groups' (ShardDataModule adds them), "
                    "so the diagnosis term scores their 'diagnoses' as groups."
                )
            return "diagnoses"
        return key

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch)
        batch_size = batch["images"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        if "diagnosis" in losses:
            self.log("train/clip_loss", losses["clip"], batch_size=batch_size)
            self.log("train/diagnosis_loss", losses["diagnosis"], batch_size=batch_size)
        self.log("train/logit_scale", self.model.logit_scale.exp(), batch_size=batch_size)
        return losses["loss"]

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self._trimmed(self.tokenizer(texts)).to(self.device)  # (T, L)

    def _trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        return trim_padding(tokens, self._pad_id) if self._trim_padding else tokens

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # CLIP's temperature clamp: beyond 100 the logits saturate and training destabilises.
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        image_embeds, text_embeds = self(batch["images"], batch["tokens"])
        logit_scale = self.model.logit_scale.exp()
        loss = ClipLoss()(image_embeds, text_embeds, logit_scale)
        self.log("val/loss", loss, batch_size=batch["images"].shape[0], sync_dist=True)
        self._val_outputs.append(
            {
                "image_embeds": image_embeds.float().cpu(),
                "text_embeds": text_embeds.float().cpu(),
                "labels": batch["labels"].cpu(),
                "modalities": batch["modalities"],
            }
        )

    def on_validation_epoch_end(self) -> None:
        outputs, self._val_outputs = self._val_outputs, []
        if not outputs:
            return
        image_embeds = torch.cat([o["image_embeds"] for o in outputs])
        text_embeds = torch.cat([o["text_embeds"] for o in outputs])
        for name, value in retrieval_recall(image_embeds, text_embeds).items():
            # Under DDP every process scores the whole split alike; syncing averages equals.
            self.log(f"val/{name}", value, sync_dist=True)

        labels = torch.cat([o["labels"] for o in outputs])
        modalities = [m for o in outputs for m in o["modalities"]]
        keep = labels >= 0
        if keep.any():
            probs = classify_by_modality(
                self.model,
                self.tokenizer,
                image_embeds[keep],
                [m for m, k in zip(modalities, keep.tolist(), strict=True) if k],
                get_label_set("atlas4"),
                device=self.device,
            )
            score = balanced_accuracy(probs, labels[keep])
            self.log("val/zeroshot_balanced_acc", score, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        groups = self._param_groups()
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
        total = hp.max_steps_hint or self._total_steps()
        warmup = min(hp.warmup_steps, max(1, total // 5))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            cosine = 0.5 * (1 + math.cos(math.pi * progress))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * cosine

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _total_steps(self) -> int:
        """Optimizer steps of the whole run, for the schedule.

        Streaming datasets have no length, so the count comes from the shard manifest.
        """
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "steps_per_epoch"):
            raise ValueError(
                "Cannot size the learning-rate schedule: set model.max_steps_hint or "
                "trainer.max_steps."
            )
        batches = datamodule.steps_per_epoch(trainer.world_size) * trainer.max_epochs
        if trainer.limit_train_batches is not None and trainer.limit_train_batches > 1:
            batches = min(batches, int(trainer.limit_train_batches) * trainer.max_epochs)
        return max(1, batches // trainer.accumulate_grad_batches)

    def _param_groups(self) -> list[dict]:
        """Split trainable parameters by learning rate (new vs pretrained) and decay."""
        hp = self.hparams
        buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim < 2 or "bias" in name or "logit_scale" in name
            pretrained = ".trunk." in f".{name}" or ".transformer." in f".{name}"
            buckets.setdefault((pretrained, no_decay), []).append(param)
        groups = []
        for (pretrained, no_decay), params in buckets.items():
            groups.append(
                {
                    "params": params,
                    "lr": hp.trunk_lr if pretrained else hp.lr,
                    "weight_decay": 0.0 if no_decay else hp.weight_decay,
                }
            )
        return groups


def default_precision(cpu_bf16: bool = True) -> str:
    """Mixed precision on GPUs; on CPUs, bf16 autocast only when ``cpu_bf16`` and the CPU has
    native bfloat16 (AVX512-BF16 or AMX), since elsewhere bf16 is emulated and slower.

    Args:
        cpu_bf16: False for models that train faster in float32 on such CPUs too. SkinCLIP's
            training passes False: its EfficientNet tower trained 1.25x faster in float32 than
            under bf16 autocast (``benchmarks/bench_pipeline.py`` times both). SkinVL's
            training keeps bf16.
    """
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if cpu_bf16 and torch.backends.mkldnn.is_available() and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    # torch's own check also accepts plain AVX-512, where bf16 is emulated and slower.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
