"""Dropping the padding columns of token batches, for text towers that allow it."""

from __future__ import annotations

import torch
from open_clip.hf_model import HFTextEncoder


def pad_token_id(tokenizer) -> int:
    """The id an open_clip tokenizer pads with."""
    # Hugging Face tokenizers name their pad id; open_clip's own pads with 0.
    return getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", 0) or 0


def trims_padding(model: torch.nn.Module) -> bool:
    """Whether the model's text tower embeds a token batch the same with its shared padding
    columns dropped: a Hugging Face tower does (it masks padding); open_clip's own text
    transformer does not (fixed positional embeddings and attention mask)."""
    return isinstance(getattr(model, "text", None), HFTextEncoder)


def trim_padding(tokens: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Drop the padding columns that every row of a token batch shares.

    open_clip pads every caption to the context length (77), about twice the longest atlas
    caption. A Hugging Face text tower masks padding and pools over real tokens only, so the
    trimmed batch embeds the same, and the text tower does about half the work. Use it only
    where :func:`trims_padding` holds.
    """
    used = (tokens != pad_id).any(dim=0).nonzero()
    return tokens if used.numel() == 0 else tokens[:, : int(used.max()) + 1]
