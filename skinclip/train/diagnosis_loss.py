"""An auxiliary loss that teaches each image its diagnosis as a short caption would say it.

ClipLoss asks each image to pick out its own full caption among the batch's captions, so it
rewards telling apart site, sex and dermoscopic findings as much as diagnoses. Zero-shot
classification instead compares an image with short diagnosis-only prompts. This loss scores
each image against the diagnosis-only phrasing (:func:`diagnosis_caption`) of every diagnosis
(or diagnosis group) in its batch and applies cross-entropy with its own, so the text tower's
embedding of a bare diagnosis lands near the images of that diagnosis. The phrasing is that of
the atlas captions ("Clark nevus, dermoscopic image."; for a group, "Nevus, dermoscopic
image."), not one of the zero-shot templates: evaluation prompts stay unseen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from skinclip.data.captions import diagnosis_caption


def diagnosis_loss(
    model: torch.nn.Module,
    tokenize,
    image_embeds: torch.Tensor,
    diagnoses: Sequence[str],
    modalities: Sequence[str | None],
    logit_scale: torch.Tensor,
    logit_adjustment: float = 0.0,
) -> torch.Tensor | None:
    """Cross-entropy of each image over the diagnoses present in its batch.

    Each image is scored only against the phrasings for its own modality ("Clark nevus,
    dermoscopic image."), so the modality word cannot give the answer away.

    Args:
        model: The open_clip model being trained (its text tower embeds the phrasings).
        tokenize: Maps a list of texts to a (T, L) token tensor on the model's device.
        image_embeds: (B, D) L2-normalised image embeddings.
        diagnoses: The diagnosis of each image as written in its metadata, or its diagnosis
            group (``SkinCLIPModule``'s ``diagnosis_loss_level``); empty when unknown. Case and
            spacing are ignored.
        modalities: The modality of each image (``None`` when unknown).
        logit_scale: The contrastive temperature's inverse (already exponentiated).
        logit_adjustment: Add this multiple of the log of each diagnosis's share of the
            batch to its logit during training (logit-adjusted loss, Menon et al. 2021), so
            that the plain scores rank a rare diagnosis as the balanced error asks instead of
            as often as it is sampled; 0 leaves the cross-entropy plain.

    Returns:
        The mean loss over images with a diagnosis, or ``None`` when the batch holds fewer
        than two distinct diagnoses (there is nothing to tell apart).
    """
    # Spellings that differ only in case or spacing are one diagnosis: the uncased tokenizer
    # would give them identical captions, and separate classes would contradict each other.
    keys = [" ".join(str(d).lower().split()) if d else "" for d in diagnoses]
    keep = [i for i, key in enumerate(keys) if key]
    names = sorted({keys[i] for i in keep})
    if len(names) < 2:
        return None
    mods = sorted({modalities[i] for i in keep}, key=str)

    texts = [diagnosis_caption(name, mod) for mod in mods for name in names]
    class_embeds = model.encode_text(tokenize(texts), normalize=True)  # (M*C, D)
    class_embeds = class_embeds.view(len(mods), len(names), -1)  # (M, C, D)

    per_image = class_embeds[[mods.index(modalities[i]) for i in keep]]  # (N, C, D)
    logits = logit_scale * torch.einsum("nd,ncd->nc", image_embeds[keep], per_image)  # (N, C)
    targets = torch.tensor([names.index(keys[i]) for i in keep], device=logits.device)
    if logit_adjustment:
        share = torch.bincount(targets, minlength=len(names)).float() / len(keep)  # (C,)
        logits = logits + logit_adjustment * share.log()
    return F.cross_entropy(logits, targets)
