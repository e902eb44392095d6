"""FAISS index layouts: exact, IVF-Flat, IVF-PQ and HNSW, chosen by name or automatically.

Every layout searches by inner product on L2-normalised vectors, i.e. cosine similarity. FAISS
ids are row numbers of the index's items. Appending adds rows; removing rows refills the index
from the exact vectors kept beside it (IVF layouts keep their trained centroids).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace

import faiss
import numpy as np

from index.device import train_on_best_device

logger = logging.getLogger(__name__)

KINDS = ("flat_ip", "ivf_flat", "ivf_pq", "hnsw")
# FAISS wants about this many training vectors per IVF list for stable centroids.
POINTS_PER_LIST = 39
# 8-bit product quantisation trains 256 centroids per sub-space, with as many points each.
PQ_MIN_TRAIN = 256 * POINTS_PER_LIST
# IVF training uses this many points per list (FAISS would take up to 256, for little gain).
TRAIN_PER_LIST = 64
# Below this many vectors exact search is fast enough that approximation buys nothing.
EXACT_UNTIL = 50_000


@dataclass(frozen=True)
class IndexSpec:
    """An index layout and its build-time parameters.

    Attributes:
        kind: One of :data:`KINDS`.
        nlist: IVF lists (``ivf_*``).
        pq_m: PQ sub-quantisers, bytes per vector (``ivf_pq``); must divide the dim.
        hnsw_m: Graph neighbours per node (``hnsw``).
        ef_construction: HNSW build-time beam width.
        nprobe: Default IVF lists visited per query.
        ef_search: Default HNSW search beam width.
        note: Why this layout was chosen, or how it was adjusted.
    """

    kind: str
    nlist: int = 0
    pq_m: int = 0
    hnsw_m: int = 0
    ef_construction: int = 0
    nprobe: int = 0
    ef_search: int = 0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def factory_string(self) -> str:
        if self.kind == "flat_ip":
            return "Flat"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        if self.kind == "ivf_pq":
            return f"IVF{self.nlist},PQ{self.pq_m}x8"
        return f"HNSW{self.hnsw_m},Flat"


def default_spec(kind: str, n: int, dim: int) -> IndexSpec:
    """The parameters we use for ``kind`` at collection size ``n``.

    Raises:
        ValueError: For an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"index type must be one of {', '.join(KINDS)} or 'auto'; got {kind!r}.")
    if kind == "flat_ip":
        return IndexSpec("flat_ip")
    if kind == "hnsw":
        return IndexSpec("hnsw", hnsw_m=32, ef_construction=80, ef_search=64)
    nlist = _nlist(n)
    if kind == "ivf_flat":
        return IndexSpec("ivf_flat", nlist=nlist, nprobe=max(1, nlist // 32))
    return IndexSpec("ivf_pq", nlist=nlist, pq_m=_pq_m(dim), nprobe=max(1, nlist // 16))


def _nlist(n: int) -> int:
    # About 2 sqrt(n), a power of two (2,048 lists at 1M): training stays within minutes on a
    # few cores. `fit_to_size` cuts it to what n vectors can train.
    return 2 ** round(math.log2(max(1.0, 2 * math.sqrt(max(n, 1)))))


def _pq_m(dim: int) -> int:
    # 8 dims per sub-quantiser when it divides the dim; else the largest divisor up to dim/4.
    for m in (dim // 8, *range(dim // 4, 0, -1)):
        if m and dim % m == 0:
            return m
    return 1


def bytes_per_vector(spec: IndexSpec, dim: int) -> int:
    """Approximate resident memory per stored vector."""
    if spec.kind in ("flat_ip", "ivf_flat"):
        return 4 * dim + (8 if spec.kind == "ivf_flat" else 0)
    if spec.kind == "ivf_pq":
        return spec.pq_m + 8
    return 4 * dim + 8 * spec.hnsw_m  # vectors plus about 2M int32 links per node


def choose_spec(
    n: int, dim: int, memory_budget: int | None = None, target_recall: float = 0.95
) -> IndexSpec:
    """Pick a layout for ``n`` vectors from the memory budget (bytes) and the recall asked for.

    - up to 50,000 vectors: exact search, fast enough and never wrong;
    - within the memory budget and recall >= 0.9: HNSW, the fastest at high recall;
    - within the budget otherwise: IVF-Flat, cheaper to build;
    - over the budget: IVF-PQ, compressing each vector to a few dozen bytes.
    """
    if n <= EXACT_UNTIL:
        return replace(default_spec("flat_ip", n, dim), note=f"auto: {n} vectors, exact search")
    for kind in ("hnsw", "ivf_flat") if target_recall >= 0.9 else ("ivf_flat",):
        spec = default_spec(kind, n, dim)
        if memory_budget is None or n * bytes_per_vector(spec, dim) <= memory_budget:
            return replace(spec, note=f"auto: {n} vectors, recall target {target_recall}")
    spec = default_spec("ivf_pq", n, dim)
    return replace(spec, note=f"auto: {n} vectors exceed the memory budget; compressed")


def fit_to_size(spec: IndexSpec, n: int) -> IndexSpec:
    """Shrink an IVF layout whose lists outnumber what ``n`` vectors can train; fall back to
    exact search when even a few lists cannot be trained. The note says which."""
    if not spec.kind.startswith("ivf"):
        return spec
    if spec.kind == "ivf_pq" and n < PQ_MIN_TRAIN:
        note = f"{n} vectors are too few to train 8-bit PQ codebooks; using ivf_flat instead"
        logger.warning(note)
        spec = replace(default_spec("ivf_flat", n, 0), note=note)
    enough = n // POINTS_PER_LIST
    if enough >= spec.nlist:
        return spec
    if enough < 4:
        note = f"{n} vectors are too few to train {spec.kind}; using exact search instead"
        logger.warning(note)
        return IndexSpec("flat_ip", note=note)
    note = f"{n} vectors train at most {enough} lists; nlist {spec.nlist} -> {enough}"
    logger.warning(note)
    note = f"{spec.note}; {note}" if spec.note else note
    return replace(spec, nlist=enough, nprobe=min(spec.nprobe, enough) or 1, note=note)


def make_index(spec: IndexSpec, vectors: np.ndarray) -> faiss.Index:
    """Build and fill a CPU index; row ``i`` of ``vectors`` gets FAISS id ``i``."""
    dim = vectors.shape[1]
    if spec.kind == "ivf_pq" and dim % spec.pq_m:
        raise ValueError(f"pq_m {spec.pq_m} must divide the embedding dim {dim}.")
    index = faiss.index_factory(dim, spec.factory_string(), faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = spec.ef_construction
    if not index.is_trained:
        index = train_on_best_device(index, spec.kind, training_sample(vectors, spec))
    if spec.kind.startswith("ivf"):
        # Saved with the index, and what a GPU copy searches with.
        faiss.extract_index_ivf(index).nprobe = spec.nprobe
    index.add(vectors)
    return index


def training_sample(vectors: np.ndarray, spec: IndexSpec, seed: int = 0) -> np.ndarray:
    """A fixed random subset big enough to train the layout: TRAIN_PER_LIST points per IVF
    list, and at least what 8-bit PQ codebooks need."""
    wanted = max(TRAIN_PER_LIST * spec.nlist, PQ_MIN_TRAIN if spec.kind == "ivf_pq" else 0)
    if len(vectors) <= wanted:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(len(vectors), wanted, replace=False))
    return np.ascontiguousarray(vectors[rows])


def search_parameters(
    spec: IndexSpec,
    nprobe: int | None = None,
    ef_search: int | None = None,
    selector: faiss.IDSelector | None = None,
) -> faiss.SearchParameters | None:
    """Per-query search settings: ``nprobe`` for IVF, ``ef_search`` for HNSW, and a selector
    restricting which ids may be returned."""
    if spec.kind.startswith("ivf"):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe or spec.nprobe or 1)
    elif spec.kind == "hnsw":
        params = faiss.SearchParametersHNSW()
        params.efSearch = int(ef_search or spec.ef_search or 16)
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params
