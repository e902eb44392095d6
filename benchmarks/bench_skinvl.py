"""SkinVL throughput on this machine: training samples/s per stage, and generation tokens/s
with the KV cache on against off, side by side in one run.

Uses the default model (SkinCLIP image tower, MiniLM decoder) on random images at 224 px, with
the frozen parts in eval mode and the mixed precision that `skinvl train` picks on this
machine; speed does not depend on the weights. Align steps use a caption-length answer,
instruct steps a one-word one, as the two stages mostly see. Generation is one greedy loop
of exactly ``--tokens`` steps, run with and without the KV cache, and checked to choose the
same tokens both ways. (transformers' own ``generate`` keeps the cache whatever it is told
when it starts from embeddings, so it cannot show the difference.)

Run: python benchmarks/bench_skinvl.py [--batch 16] [--tokens 48]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from skinclip.train.module import default_precision
from skinvl.model import from_skinclip, prompt_embeddings
from skinvl.module import SkinVLModule

logger = logging.getLogger("bench_skinvl")


CAPTION = (
    "Dermoscopic image of a melanoma on the back of a female patient, palpable, showing an "
    "atypical pigment network, irregular streaks and a blue-whitish veil."
)


def train_rate(stage: str, batch: int, steps: int = 5) -> float:
    """Samples/s of ``SkinVLModule``'s own training step, with what the stage trains."""
    module = SkinVLModule(stage=stage, image_size=224)
    module.train()  # the module keeps its frozen parts in eval mode itself
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    images = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    if stage == "align":
        questions, answers = ["Describe this lesion."] * batch, [CAPTION] * batch
    else:
        questions, answers = ["Is a blue-whitish veil present?"] * batch, ["yes"] * batch
    step_batch = {"images": images, "questions": questions, "answers": answers}
    bf16 = default_precision().startswith("bf16")
    for step in range(steps + 1):
        if step == 1:  # the first step pays for warm-up
            start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.answer_loss(step_batch)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


@torch.no_grad()
def greedy_rate(model, batch: int, tokens: int, use_cache: bool) -> tuple[float, torch.Tensor]:
    """Tokens/s of greedy decoding, and the tokens: one loop, with or without the KV cache.

    With the cache each step feeds only the newest token and the saved keys and values;
    without it each step runs the whole sequence (visual tokens, prompt, answer so far) again.
    """
    model.eval()
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    embeds, mask = prompt_embeddings(model, images, ["Describe this lesion."] * batch, tokens)
    lm = model.language_model
    table = lm.get_input_embeddings()
    start = time.perf_counter()
    past, step_embeds, chosen = None, embeds, []
    for _ in range(tokens):
        positions = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: count real tokens only
        if past is not None:
            positions = positions[:, -1:]
        out = lm(
            inputs_embeds=step_embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=use_cache,
        )
        next_ids = out.logits[:, -1].argmax(-1)
        chosen.append(next_ids)
        new = table(next_ids)[:, None]
        mask = torch.cat([mask, mask.new_ones(batch, 1)], 1)
        if use_cache:
            past, step_embeds = out.past_key_values, new
        else:
            embeds = torch.cat([embeds, new], 1)
            step_embeds = embeds
    return batch * tokens / (time.perf_counter() - start), torch.stack(chosen, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info(
        "threads: %d, batch %d, precision %s",
        torch.get_num_threads(),
        args.batch,
        default_precision(),
    )
    for stage in ("align", "instruct"):
        logger.info("training, %s stage: %.1f samples/s", stage, train_rate(stage, args.batch))
    model = from_skinclip(None, projector="mlp", image_size=224)
    greedy_rate(model, 2, 4, use_cache=True)  # warm-up
    cached, with_cache = greedy_rate(model, args.batch, args.tokens, use_cache=True)
    uncached, without_cache = greedy_rate(model, args.batch, args.tokens, use_cache=False)
    # The cache must only save work: the same tokens either way (or this measures two things).
    agree = (with_cache == without_cache).float().mean().item()
    logger.info("same tokens with and without the cache: %.1f%%", 100 * agree)
    logger.info("generation, KV cache on : %.1f tokens/s", cached)
    logger.info("generation, KV cache off: %.1f tokens/s", uncached)
    logger.info("KV cache speed-up: %.2fx", cached / uncached)


if __name__ == "__main__":
    main()
