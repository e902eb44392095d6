"""Run-time choice between CPU and GPU FAISS.

With the ``faiss-gpu`` build and at least one visible GPU, exact and IVF indexes are copied to
the GPU for searching (sharded across all GPUs when there are several, so each holds a part of
the vectors) and IVF training runs there too. HNSW has no GPU implementation in FAISS and stays
on the CPU. The CPU copy is always kept: it is what gets saved, and filtered searches use it,
since GPU indexes do not take id selectors.
"""

from __future__ import annotations

import logging

import faiss

logger = logging.getLogger(__name__)


def gpu_count() -> int:
    """Visible GPUs, 0 with the CPU-only FAISS build."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def gpu_supported(kind: str) -> bool:
    return kind != "hnsw"


def to_gpu(index: faiss.Index, kind: str) -> faiss.Index | None:
    """A GPU copy of ``index`` for searching, or None when the CPU must do it."""
    gpus = gpu_count()
    if gpus == 0 or not gpu_supported(kind):
        return None
    if gpus == 1:
        copy = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    else:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # each GPU holds 1/n of the vectors; results are merged
        copy = faiss.index_cpu_to_all_gpus(index, co=options)
    logger.info("Searching on %d GPU(s)", gpus)
    return copy


def train_on_best_device(index: faiss.Index, kind: str, vectors) -> faiss.Index:
    """Train an IVF index, on the GPU when there is one; returns the trained CPU index."""
    if gpu_count() and kind.startswith("ivf"):
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        gpu.train(vectors)
        return faiss.index_gpu_to_cpu(gpu)
    index.train(vectors)
    return index
