"""SkinVL throughput on this machine: training samples/s per stage, and generation tokens/s
with the KV cache on against off, side by side in one run.

Uses the default model (SkinCLIP image tower, MiniLM decoder) on random images at 224 px, with
the frozen parts in eval mode and the mixed precision that `skinvl train` picks on this
machine; speed does not depend on the weights. Align steps use a caption-length answer,
instruct steps a one-word one, as the two stages mostly see. Generation is forced to the full
``--tokens`` length (no early stop), so both settings produce the same number of tokens.

Run: python benchmarks/bench_skinvl.py [--batch 16] [--tokens 48]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from skinclip.train.module import default_precision
from skinvl.model import from_skinclip, generate
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


def generation_rate(model, batch: int, tokens: int, use_cache: bool) -> float:
    model.eval()
    images = torch.randn(batch, 3, 224, 224)
    questions = ["Describe this lesion."] * batch
    generate(model, images[:1], questions[:1], max_new_tokens=4, use_cache=use_cache)
    start = time.perf_counter()
    generate(
        model, images, questions, max_new_tokens=tokens, min_new_tokens=tokens, use_cache=use_cache
    )
    return batch * tokens / (time.perf_counter() - start)


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
    cached = generation_rate(model, args.batch, args.tokens, use_cache=True)
    uncached = generation_rate(model, args.batch, args.tokens, use_cache=False)
    logger.info("generation, KV cache on : %.1f tokens/s", cached)
    logger.info("generation, KV cache off: %.1f tokens/s", uncached)
    logger.info("KV cache speed-up: %.2fx", cached / uncached)


if __name__ == "__main__":
    main()
