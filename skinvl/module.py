"""LightningModule for the two SkinVL training stages.

Stage ``align`` trains the projectors on captions with the language model frozen, except for
weights the language model's checkpoint did not have (the default MiniLM has no trained
LM-head transform; left random and frozen, no projector could make it say words). Stage
``instruct`` trains the projectors and the language model (or LoRA adapters on it, through
``peft``) on question/answer pairs. The SkinCLIP image encoder stays frozen in both: it is
what SkinCLIP learnt, and the atlas is too small to retrain it through a language model.
"""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L
import torch

from skinvl.data import STAGES
from skinvl.model import from_skinclip

logger = logging.getLogger(__name__)

# The frozen encoder (and, in align, the frozen language model) are in eval mode on purpose;
# Lightning's warning about modules in eval mode at the start of training is expected here.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


class SkinVLModule(L.LightningModule):
    """Args:
    skinclip_checkpoint: SkinCLIP checkpoint whose image tower is the encoder.
    language_model: Local folder or cached name of a causal LM (default: MiniLM decoder).
    projector: ``linear`` or ``mlp``.
    stage: ``align`` or ``instruct``.
    init_from: A stage-1 SkinVL Lightning checkpoint to start stage 2 from.
    image_size: Encoder input resolution.
    lr: Peak learning rate.
    warmup_steps: Linear warmup before cosine decay.
    total_steps: Schedule length (optimizer steps).
    lora_rank: >0 trains LoRA adapters of this rank instead of the whole language model.
    """

    def __init__(
        self,
        skinclip_checkpoint: str | None = None,
        language_model: str | None = None,
        projector: str = "mlp",
        stage: str = "instruct",
        init_from: str | None = None,
        image_size: int = 224,
        lr: float = 1e-4,
        warmup_steps: int = 20,
        total_steps: int = 1000,
        lora_rank: int = 0,
    ):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}; got {stage!r}.")
        self.save_hyperparameters()
        self.model = from_skinclip(skinclip_checkpoint, language_model, projector, image_size)
        if init_from:
            state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
            self.load_state_dict(state)
            logger.info("Started from %s", init_from)
        self._set_trainable()
        self.train()  # Lightning keeps each module's mode; set the stage's modes once here

    def _set_trainable(self) -> None:
        hp = self.hparams
        self.model.encoder.requires_grad_(False)
        lm = self.model.language_model
        lm.requires_grad_(hp.stage == "instruct" and not hp.lora_rank)
        if hp.stage == "align":
            for name, param in lm.named_parameters():
                param.requires_grad_(name in self.model.new_lm_weights)
        if hp.stage == "instruct" and hp.lora_rank:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError:
                raise ValueError(
                    "lora_rank needs the peft package: pip install -e '.[lora]'"
                ) from None
            config = LoraConfig(
                r=hp.lora_rank,
                lora_alpha=2 * hp.lora_rank,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            )
            self.model.language_model = get_peft_model(self.model.language_model, config)

    def train(self, mode: bool = True) -> SkinVLModule:
        super().train(mode)
        # Frozen parts stay in inference mode: the encoder's BatchNorm statistics must not
        # drift away from what SkinCLIP learnt, and neither frozen part should drop activations.
        self.model.encoder.eval()
        if self.hparams.stage == "align":
            self.model.language_model.eval()  # frozen body; the new head weights have no dropout
        return self

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.answer_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["questions"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss = self.answer_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["questions"]))

    def answer_loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy on the answer tokens of ``{"images", "questions", "answers"}``."""
        tokens = self.model.encode_batch(batch["questions"], batch["answers"])
        tokens.input_ids = tokens.input_ids.to(self.device)
        tokens.attention_mask = tokens.attention_mask.to(self.device)
        tokens.labels = tokens.labels.to(self.device)
        return self.model(batch["images"], tokens).loss

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=0.01)

        def schedule(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            progress = min(1.0, (step - hp.warmup_steps) / max(1, hp.total_steps - hp.warmup_steps))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
