"""Check the CUDA code paths on a machine with a GPU: a short Lightning training run and the
FAISS GPU index. Exits non-zero on any failure; prints what it checked.

Needs the ``gpu`` extra for the FAISS part (faiss-gpu); without it only training is checked.

Run: python benchmarks/check_gpu.py  (``--cpu`` runs the training check on the CPU)
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger("check_gpu")


def synthetic_shards(root: Path) -> Path:
    from skinclip.data.atlas import ATLAS_4CLASS
    from skinclip.data.records import ImageRecord
    from skinclip.data.shards import write_shards

    records = []
    for case in range(48):
        group = ATLAS_4CLASS[case % 4]
        path = root / f"{case}.png"
        Image.new("RGB", (96, 80), (40 * (case % 4) + 30, 2 * case, 200 - 3 * case)).save(path)
        meta = {
            "case_id": f"g-{case}",
            "modality": "dermoscopic",
            "diagnosis": group,
            "diagnosis_group": group,
            "split": ("train", "val", "test")[case % 3],
        }
        records.append(ImageRecord(f"g-{case}", path, (f"dermoscopic image of {group}",), meta))
    write_shards(records, root / "shards", shard_size=16, source_name="gpu-check")
    return root / "shards"


def check_training(root: Path, accelerator: str) -> None:
    import lightning as L

    from skinclip.train.datamodule import ShardDataModule
    from skinclip.train.module import SkinCLIPModule, default_precision

    shards = synthetic_shards(root)
    module = SkinCLIPModule(image_size=64, max_steps_hint=4)
    before = module.model.visual.trunk.conv_stem.weight.detach().clone()
    data = ShardDataModule(shards=str(shards), batch_size=8, num_workers=0, image_size=64)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=default_precision(),
        max_steps=4,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(root / "train"),
    )
    trainer.fit(module, datamodule=data)
    after = module.model.visual.trunk.conv_stem.weight.detach().cpu()
    loss = float(trainer.callback_metrics["train/loss"])
    assert np.isfinite(loss), f"training loss is {loss}"
    assert not torch.equal(before.cpu(), after), "the image tower did not change"
    device = torch.cuda.get_device_name(0) if accelerator == "gpu" else "cpu"
    logger.info("training on %s (%s): 4 steps, loss %.3f", device, default_precision(), loss)


def check_faiss() -> None:
    import faiss

    from index import CaseIndex
    from index.device import gpu_count

    if gpu_count() == 0:
        logger.warning("faiss has no GPU support here (install the gpu extra); skipped")
        return
    rng = np.random.default_rng(0)
    data = rng.standard_normal((100_000, 256)).astype("f4")
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    items = [{"key": str(i), "case_id": str(i)} for i in range(len(data))]
    queries = data[:64]
    for kind in ("flat_ip", "ivf_flat"):
        idx = CaseIndex.build(data, items, "gpu-check", index_type=kind)
        gpu_ids = [[h.key for h in hits] for hits in idx.search(queries, k=10, unit="item")]
        assert idx._gpu is not None, f"{kind} did not search on the GPU"
        _, cpu = idx._index.search(queries, 10)
        agree = np.mean(
            [len(set(map(int, g)) & set(c)) / 10 for g, c in zip(gpu_ids, cpu, strict=True)]
        )
        assert agree >= 0.99, f"{kind}: GPU and CPU results agree on only {agree:.3f}"
        logger.info(
            "faiss %s on %d GPU(s): top-10 agreement with CPU %.3f",
            kind,
            faiss.get_num_gpus(),
            agree,
        )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # --cpu runs the same checks on the CPU, to test this script where there is no GPU.
    accelerator = "cpu" if "--cpu" in sys.argv else "gpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        logger.error("No CUDA device visible; run this on a GPU machine (or pass --cpu).")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        check_training(Path(tmp), accelerator)
    if accelerator == "gpu":
        check_faiss()
    logger.info("checks passed" if accelerator == "gpu" else "CPU dry run passed (no GPU checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
