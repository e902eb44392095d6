"""Throughput of the SkinCLIP training pipeline on this machine, side by side in one run.

Measures, on the derm7pt atlas found through --data or SKINCLIP_DATA:

1. Shard writing (images/s): ``write_shards`` (JPEG bytes kept as they are) against the
   baseline a first version would write: decode every image and re-encode it as JPEG.
2. Loader against trainer (samples/s): the training DataLoader alone, against one
   optimisation step of the default model on batches already in memory. A ratio above 1 means
   the loader keeps up and training is compute-bound.
3. End-to-end training samples/s at the default config (loader and steps together).
4. On CPUs with native bfloat16: end-to-end training in float32 (what ``skinclip train`` uses
   on CPUs) against the same under bf16 autocast, each measured twice, alternating. End to end,
   because caption lengths and the diagnosis groups in a batch change its shapes from step to
   step, as in training; one fixed batch timed over and over showed the two about equal.

Run: python benchmarks/bench_pipeline.py --data ../shared/data [--batch-size 64]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from pathlib import Path

import torch
import webdataset as wds
import yaml
from PIL import Image

from skinclip.cli_common import positive_int
from skinclip.data.atlas import read_atlas
from skinclip.data.shards import write_shards
from skinclip.quickstart import default_config, find_atlas
from skinclip.train.datamodule import ShardDataModule
from skinclip.train.module import SkinCLIPModule, cpu_has_native_bf16

logger = logging.getLogger("bench_pipeline")


def bench_shard_writing(atlas: Path, out: Path) -> tuple[float, float, int]:
    records = list(read_atlas(atlas))
    start = time.perf_counter()
    write_shards(records, out / "shards", shard_size=128, source_name="derm7pt")
    ours = len(records) / (time.perf_counter() - start)

    # Baseline: decode and re-encode every image, no validation beyond what decoding does.
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "naive-%06d.tar"), maxcount=128, verbose=0) as sink:
        for record in records:
            buffer = io.BytesIO()
            Image.open(record.image_path).convert("RGB").save(buffer, format="JPEG", quality=95)
            sink.write({"__key__": record.key, "jpg": buffer.getvalue(), "txt": record.captions[0]})
    naive = len(records) / (time.perf_counter() - start)
    return ours, naive, len(records)


def _rate(seen: int, start: float | None, timed: int, batches: int) -> float:
    if start is None or timed < batches:
        raise SystemExit(
            f"The training split gave {timed} timed batches, fewer than --batches {batches} "
            "(the first batch is not timed); lower --batches or --batch-size."
        )
    return seen / (time.perf_counter() - start)


def bench_loader(data: ShardDataModule, batches: int) -> float:
    loader = data.train_dataloader()
    seen, start, i = 0, None, 0
    for i, batch in enumerate(loader):
        if i == 0:  # worker start-up is not timed
            start = time.perf_counter()
            continue
        seen += batch["images"].shape[0]
        if i >= batches:
            break
    return _rate(seen, start, i, batches)


def train_step(module: SkinCLIPModule, optimizer, batch: dict, bf16: bool = False) -> None:
    """One optimisation step; float32, as ``skinclip train`` runs on CPUs, unless ``bf16``."""
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.training_losses(batch)["loss"]
    loss.backward()
    optimizer.step()


def bench_steps(module: SkinCLIPModule, batch: dict, steps: int) -> float:
    optimizer = torch.optim.AdamW(module._param_groups(), lr=1e-4)
    module.set_training_modes()

    def step() -> None:
        train_step(module, optimizer, batch)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch["images"].shape[0] / (time.perf_counter() - start)


def bench_end_to_end(
    module: SkinCLIPModule, data: ShardDataModule, batches: int, bf16: bool = False
) -> float:
    optimizer = torch.optim.AdamW(module._param_groups(), lr=1e-4)
    module.set_training_modes()
    seen, start, i = 0, None, 0
    for i, batch in enumerate(data.train_dataloader()):
        train_step(module, optimizer, batch, bf16)
        if i == 0:  # start-up and the warm-up step are not timed
            start = time.perf_counter()
            continue
        seen += batch["images"].shape[0]
        if i >= batches:
            break
    return _rate(seen, start, i, batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder holding derm7pt/")
    parser.add_argument(
        "--batches",
        type=positive_int,
        default=6,
        help="batches timed per measurement, after one untimed (more is steadier)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="instead of the default config's batch size",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = yaml.safe_load(default_config().read_text())
    size = config["model"]["image_size"]
    batch_size = args.batch_size or config["data"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ours, naive, n = bench_shard_writing(find_atlas(args.data), out)
        print(
            f"shard writing ({n} images): skinclip {ours:.0f} img/s, "
            f"decode+re-encode baseline {naive:.0f} img/s, ratio {ours / naive:.2f}x"
        )

        data_options = {k: v for k, v in config["data"].items() if k != "shards"}
        data_options.update(image_size=size, batch_size=batch_size)
        data = ShardDataModule(str(out / "shards"), **data_options)
        train_size = data_options.get("train_image_size") or size
        module = SkinCLIPModule(**config["model"])
        loader_rate = bench_loader(data, args.batches)
        # A batch of one diagnosis would leave the diagnosis term out of the timed step.
        batch = next(b for b in data.train_dataloader() if len(set(b["diagnoses"])) > 1)
        step_rate = bench_steps(module, batch, args.batches)
        print(
            f"loader {loader_rate:.1f} samples/s vs training step {step_rate:.1f} samples/s "
            f"(batch {batch_size}, {train_size}px): "
            f"loader/trainer ratio {loader_rate / step_rate:.2f}x"
        )
        e2e = bench_end_to_end(module, data, args.batches)
        print(
            f"end-to-end training {e2e:.1f} samples/s at batch {batch_size} "
            f"({e2e / step_rate:.2f}x of the compute-only rate)"
        )
        if e2e > 1.05 * step_rate:
            # End to end includes the step itself, so it cannot truly be faster.
            logging.warning("Timings disturbed by other load; rerun with more --batches.")
        if cpu_has_native_bf16():
            # Alternating, so that a change in the machine's load hits both alike.
            rates = {False: [], True: []}
            for bf16 in (False, True, False, True):
                rates[bf16].append(bench_end_to_end(module, data, args.batches, bf16))
            fp32_rate, bf16_rate = max(rates[False]), max(rates[True])
            print(
                f"end-to-end training float32 {fp32_rate:.1f} samples/s vs bf16 autocast "
                f"{bf16_rate:.1f} samples/s (best of two each): ratio {fp32_rate / bf16_rate:.2f}x"
            )


if __name__ == "__main__":
    main()
