"""SkinVL throughput on this machine: training samples/s per stage, and generation tokens/s
with the KV cache on against off, side by side in one run.

Uses the default model (SkinCLIP image trunk, MiniLM decoder) on random images at 224 px;
speed does not depend on the weights. Generation is forced to the full ``--tokens`` length
(no early stop), so both settings produce the same number of tokens.

Run: python benchmarks/bench_skinvl.py [--batch 16] [--tokens 48]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from skinvl.model import from_skinclip, generate

logger = logging.getLogger("bench_skinvl")


def train_rate(model, stage: str, batch: int, steps: int = 3) -> float:
    model.train()
    model.encoder.requires_grad_(False)
    model.language_model.requires_grad_(stage == "instruct")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    images = torch.randn(batch, 3, 224, 224)
    tokens = model.encode_batch(["Is a blue-whitish veil present?"] * batch, ["yes"] * batch)
    for step in range(steps + 1):
        if step == 1:  # the first step pays for warm-up
            start = time.perf_counter()
        optimizer.zero_grad()
        model(images, tokens).loss.backward()
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
    model = from_skinclip(None, projector="mlp", image_size=224)
    logger.info("threads: %d, batch %d", torch.get_num_threads(), args.batch)
    for stage in ("align", "instruct"):
        logger.info(
            "training, %s stage: %.1f samples/s", stage, train_rate(model, stage, args.batch)
        )
    cached = generation_rate(model, args.batch, args.tokens, use_cache=True)
    uncached = generation_rate(model, args.batch, args.tokens, use_cache=False)
    logger.info("generation, KV cache on : %.1f tokens/s", cached)
    logger.info("generation, KV cache off: %.1f tokens/s", uncached)
    logger.info("KV cache speed-up: %.2fx", cached / uncached)


if __name__ == "__main__":
    main()
