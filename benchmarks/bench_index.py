"""Case-index layouts against exact numpy search, side by side in one run.

Vectors: L2-normalised, dim 256, drawn from a mixture of Gaussian clusters (fixed seed) so they
have neighbourhoods like real embeddings: ``clusters`` centres from N(0, I), each point a
centre plus N(0, sigma^2 I) noise (sigma 0.6, about a third of a centre's norm), normalised.
Queries are fresh points of the same mixture. Optionally also the real atlas embeddings.

For each layout: build time, index size (the serialised FAISS index, about its resident
memory), queries/s at batch 1 and batch 256 through ``CaseIndex.search``, and recall@10
against exact search. The baseline is numpy: one matrix multiply and argpartition top-k.

Run: python benchmarks/bench_index.py [--sizes 100000 1000000] [--atlas SHARDS --checkpoint C]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from index import CaseIndex

logger = logging.getLogger("bench_index")

DIM, K, SIGMA = 256, 10, 0.6
KINDS = ("flat_ip", "ivf_flat", "ivf_pq", "hnsw")


def mixture(n: int, clusters: int, seed: int, centre_seed: int = 0) -> np.ndarray:
    centres = np.random.default_rng(centre_seed).standard_normal((clusters, DIM)).astype("f4")
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the float64 temporaries small
        m = min(100_000, n - start)
        block = centres[rng.integers(0, clusters, m)] + SIGMA * rng.standard_normal((m, DIM))
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def numpy_topk(data: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    sims = queries @ data.T  # (Q, N)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def qps(search, queries: np.ndarray, batch: int, budget_s: float = 8.0) -> float:
    """Queries/s over as many batches as fit in the time budget (at least one)."""
    done, start = 0, time.perf_counter()
    while True:
        chunk = queries[(done % len(queries)) : (done % len(queries)) + batch]
        search(chunk)
        done += len(chunk)
        if time.perf_counter() - start > budget_s or done >= 20 * len(queries):
            return done / (time.perf_counter() - start)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)])
    )


def bench(name: str, data: np.ndarray, queries: np.ndarray, kinds=KINDS) -> list[dict]:
    logger.info(
        "== %s: %d vectors, dim %d, %d threads",
        name,
        len(data),
        data.shape[1],
        faiss.omp_get_max_threads(),
    )
    rows = []
    truth = numpy_topk(data, queries)
    base1 = qps(lambda q: numpy_topk(data, q), queries, 1)
    base256 = qps(lambda q: numpy_topk(data, q), queries, 256)
    rows.append(
        {
            "index": "numpy exact (baseline)",
            "build_s": 0.0,
            "mb": data.nbytes / 2**20,
            "qps1": base1,
            "qps256": base256,
            "recall": 1.0,
        }
    )
    items = [{"key": str(i), "case_id": str(i)} for i in range(len(data))]
    for kind in kinds:
        start = time.perf_counter()
        idx = CaseIndex.build(data, items, "bench", index_type=kind)
        build = time.perf_counter() - start
        with tempfile.NamedTemporaryFile() as f:
            faiss.write_index(idx._index, f.name)
            size = Path(f.name).stat().st_size / 2**20

        def search(q, idx=idx):
            return idx.search(q, k=K, unit="item")

        found = [[int(h.key) for h in hits] for hits in search(queries)]
        rows.append(
            {
                "index": f"{idx.spec.kind} {idx.spec.factory_string()}",
                "build_s": build,
                "mb": size,
                "qps1": qps(search, queries, 1),
                "qps256": qps(search, queries, 256),
                "recall": recall(found, truth),
            }
        )
        if idx.spec.note:
            rows[-1]["index"] += f" ({idx.spec.note})"
    logger.info(
        "| index | build s | index MB | q/s batch 1 | q/s batch 256 | recall@10 | speed-up at 256 |"
    )
    logger.info("|---|---|---|---|---|---|---|")
    for row in rows:
        logger.info(
            "| %s | %.1f | %.0f | %.0f | %.0f | %.3f | %.1fx |",
            row["index"],
            row["build_s"],
            row["mb"],
            row["qps1"],
            row["qps256"],
            row["recall"],
            row["qps256"] / base256,
        )
    return rows


def atlas_embeddings(shards: Path, checkpoint: str | None) -> tuple[np.ndarray, np.ndarray]:
    from skinclip.encode import encode_split
    from skinclip.model.towers import create_skinclip

    bundle = create_skinclip(pretrained=checkpoint)
    data = np.concatenate(
        [encode_split(bundle, shards, s).image_embeds.numpy() for s in ("train", "val")]
    )
    queries = encode_split(bundle, shards, "test").image_embeds.numpy()
    return data, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--clusters", type=int, default=4000)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--atlas", default=None, help="atlas shard folder (optional)")
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("index").setLevel(logging.WARNING)
    for n in args.sizes:
        data = mixture(n, args.clusters, seed=1)
        queries = mixture(args.queries, args.clusters, seed=2)
        bench(f"synthetic mixture of {args.clusters} clusters", data, queries)
    if args.atlas:
        data, queries = atlas_embeddings(Path(args.atlas), args.checkpoint)
        bench("atlas train+val image embeddings, test queries", data, queries)


if __name__ == "__main__":
    main()
