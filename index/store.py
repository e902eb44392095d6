"""`CaseIndex`: image embeddings of atlas cases in FAISS, searchable by image, text or case."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np

from index.device import to_gpu
from index.filters import Where, allowed_rows
from index.hits import Hit, check_unit, merge_hits, rank_hits
from index.items import clean_items
from index.manifest import Manifest
from index.persist import read_index_folder, write_index_folder
from index.types import (
    IndexSpec,
    choose_spec,
    default_spec,
    fit_to_size,
    make_index,
    search_parameters,
)
from index.vectors import as_unit_rows

logger = logging.getLogger(__name__)

# IVF-PQ searches fetch this many times the candidates asked for and rerank them exactly.
PQ_RERANK = 8


def _check_search_params(nprobe: int | None, ef_search: int | None) -> None:
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")


class CaseIndex:
    """A searchable index of case images with their metadata.

    Each row is one image (an *item*); images of the same case share a ``case_id``. Scores
    are cosine similarities, since both stored and query embeddings are L2-normalised. The
    exact vectors are kept beside the FAISS index, so a filtered search that the approximate
    index cannot fill is completed exactly, and removals refill the index without re-encoding.
    Create one with `CaseIndex.build` or `CaseIndex.load`.
    """

    def __init__(
        self, index: faiss.Index, vectors: np.ndarray, items: list[dict], manifest: Manifest
    ) -> None:
        assert index.ntotal == len(vectors) == len(items), "index, vectors and items disagree"
        self._index = index
        self._vectors = vectors  # (N, D) float32; memory-mapped after load
        self._items = items
        self.manifest = manifest
        self.spec = IndexSpec.from_dict(manifest.index_params)
        self._gpu: faiss.Index | None = None
        self._gpu_tried = False
        self._refresh()

    def _refresh(self) -> None:
        self._case_rows: dict[str, list[int]] = {}
        for row, item in enumerate(self._items):
            self._case_rows.setdefault(item["case_id"], []).append(row)
        self._max_case_size = max((len(rows) for rows in self._case_rows.values()), default=0)
        self._keys = {item["key"]: row for row, item in enumerate(self._items)}
        self._gpu, self._gpu_tried = None, False  # a GPU copy is stale after any change

    @classmethod
    def build(
        cls,
        embeds: np.ndarray,
        items: Sequence[dict],
        model_id: str,
        model_checksum: str | None = None,
        index_type: str | IndexSpec = "flat_ip",
        memory_budget: int | None = None,
        target_recall: float = 0.95,
    ) -> CaseIndex:
        """Build an index from image embeddings and their metadata rows.

        Args:
            embeds: (N, D) L2-normalised image embeddings. Rows within 1e-2 of unit norm are
                renormalised; rows further off raise, since they mean normalisation was skipped.
            items: N metadata dicts in row order, each with a unique ``key`` and a ``case_id``;
                other fields (caption, diagnosis, modality, image_path, ...) are kept as given.
            model_id: The model that produced ``embeds``; queries must come from it too.
            model_checksum: Checksum of that model's weights, if known.
            index_type: ``flat_ip``, ``ivf_flat``, ``ivf_pq``, ``hnsw``, ``auto`` (chosen from
                the size, ``memory_budget`` in bytes and ``target_recall``), or an IndexSpec.
                IVF layouts shrink, or fall back to exact search, on collections too small to
                train them; the manifest's ``index_params.note`` says so.

        Raises:
            ValueError: If the embeddings or items are malformed or disagree in length.
        """
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string; got {model_id!r}.")
        vectors = as_unit_rows(embeds, "embeds")  # (N, D) float32
        if len(vectors) == 0:
            raise ValueError("embeds has no rows; an index needs at least one image.")
        if len(vectors) != len(items):
            raise ValueError(
                f"embeds has {len(vectors)} rows but items has {len(items)} entries; "
                "they must describe the same images in the same order."
            )
        items = clean_items(items)
        n, dim = vectors.shape
        if isinstance(index_type, IndexSpec):
            spec = index_type
        elif index_type == "auto":
            spec = choose_spec(n, dim, memory_budget, target_recall)
        else:
            spec = default_spec(index_type, n, dim)
        spec = fit_to_size(spec, n)
        index = make_index(spec, vectors)
        manifest = Manifest(
            model_id=model_id,
            model_checksum=model_checksum,
            embed_dim=int(dim),
            index_type=spec.kind,
            metric="inner_product",
            count=n,
            n_cases=len({item["case_id"] for item in items}),
            index_params=spec.to_dict(),
        )
        logger.info(
            "Built %s index of %d %s in %d cases (dim %d, model %s)",
            spec.kind,
            n,
            items[0].get("content", "images"),  # never empty: checked above
            manifest.n_cases,
            dim,
            model_id,
        )
        return cls(index, vectors, items, manifest)

    # Introspection

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def dim(self) -> int:
        return self.manifest.embed_dim

    @property
    def n_cases(self) -> int:
        return len(self._case_rows)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in order of first appearance."""
        return list(self._case_rows)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"CaseIndex({len(self)} images, {self.n_cases} cases, dim={self.dim}, "
            f"model_id={self.model_id!r}, index_type={self.spec.kind!r})"
        )

    def item(self, row: int) -> dict:
        """A copy of the metadata row of image ``row``."""
        return dict(self._items[row])

    def matching_cases(self, where: Where | None = None) -> list[str]:
        """Case ids with at least one image that passes ``where``, in index order."""
        mask = allowed_rows(self._items, where)
        rows = range(len(self._items)) if mask is None else np.flatnonzero(mask).tolist()
        return list(dict.fromkeys(self._items[row]["case_id"] for row in rows))

    def field_values(self, field: str) -> list[str]:
        """The distinct values one metadata field takes, as sorted text (for filter menus)."""
        return sorted({str(i[field]) for i in self._items if i.get(field) is not None})

    def case_items(self, case_id: str) -> list[dict]:
        """Copies of the metadata rows of every image of one case, in index order."""
        return [dict(self._items[row]) for row in self._rows_of(case_id)]

    # Updates

    def add(self, embeds: np.ndarray, items: Sequence[dict]) -> None:
        """Append images without rebuilding; IVF layouts reuse their trained centroids.

        Raises:
            ValueError: On malformed rows, a dim other than the index's, or a key that is
                already indexed (use `replace` to change a case).
        """
        vectors = as_unit_rows(embeds, "embeds", dim=self.dim)
        if len(vectors) != len(items):
            raise ValueError(f"embeds has {len(vectors)} rows but items has {len(items)}.")
        items = clean_items(items)
        taken = [item["key"] for item in items if item["key"] in self._keys]
        if taken:
            raise ValueError(
                f"{len(taken)} key(s) are already indexed, e.g. {taken[0]!r}; remove or "
                "replace their cases first."
            )
        self._index.add(vectors)
        self._vectors = np.concatenate([np.asarray(self._vectors), vectors])
        self._items = self._items + items
        self._changed()

    def remove(self, case_ids: Sequence[str], _allow_empty: bool = False) -> int:
        """Drop every image of the given cases; returns how many images went.

        The FAISS index is refilled from the kept exact vectors, so row ids stay contiguous.

        Raises:
            ValueError: If a case id is unknown or nothing would be left.
        """
        if isinstance(case_ids, str):
            case_ids = [case_ids]
        rows = {row for case_id in dict.fromkeys(case_ids) for row in self._rows_of(case_id)}
        keep = np.array([row not in rows for row in range(len(self))])
        if not keep.any() and not _allow_empty:
            raise ValueError("Removing these cases would leave the index empty; build a new one.")
        self._vectors = np.ascontiguousarray(np.asarray(self._vectors)[keep])
        self._items = [item for item, kept in zip(self._items, keep, strict=True) if kept]
        if self.spec.kind.startswith("ivf"):
            self._index.reset()  # keeps the trained coarse quantiser and codebooks
            self._index.add(self._vectors)
        else:
            self._index = make_index(self.spec, self._vectors)
        self._changed()
        return len(rows)

    def replace(self, case_id: str, embeds: np.ndarray, items: Sequence[dict]) -> None:
        """Swap a case's images for new ones (the new rows must all carry ``case_id``).

        Raises:
            ValueError: If ``case_id`` is unknown or a new row names another case.
        """
        own = set(self._rows_of(case_id))
        if not items:
            raise ValueError(f"No replacement rows for case {case_id!r}; use remove to drop it.")
        if any(item.get("case_id") != case_id for item in items):
            raise ValueError(f"Every replacement row must have case_id {case_id!r}.")
        # Everything is checked before the case is removed, so a refused replace loses nothing.
        vectors = as_unit_rows(embeds, "embeds", dim=self.dim)
        if len(vectors) != len(items):
            raise ValueError(f"embeds has {len(vectors)} rows but items has {len(items)}.")
        clean_items(items)
        taken = [i["key"] for i in items if self._keys.get(i["key"], -1) not in own | {-1}]
        if taken:
            raise ValueError(f"Key {taken[0]!r} belongs to another case; keys must be unique.")
        self.remove([case_id], _allow_empty=True)
        self.add(vectors, items)

    def _changed(self) -> None:
        self.manifest = Manifest(
            **{
                **self.manifest.__dict__,
                "count": len(self._items),
                "n_cases": len({item["case_id"] for item in self._items}),
            }
        )
        self._refresh()

    # Search

    def search(
        self,
        query_embeds: np.ndarray,
        k: int = 10,
        unit: str = "case",
        where: Where | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[list[Hit]]:
        """Find the images or cases closest to each query.

        Args:
            query_embeds: (Q, D) or (D,) L2-normalised query embeddings (text or image) from
                the model the index was built with.
            k: Number of hits per query. If fewer cases (or images, for ``unit="item"``)
                match, all of them are returned.
            unit: ``"case"`` returns distinct cases, each ranked by and naming its
                best-matching image; ``"item"`` returns individual images.
            where: Metadata filter, e.g. ``{"modality": "dermoscopic", "diagnosis":
                ["melanoma", "nevus"]}`` (see :mod:`index.filters`). k hits are returned
                whenever k matching units exist.
            nprobe: IVF lists to visit for this search (default: the index's).
            ef_search: HNSW beam width for this search (default: the index's).

        Returns:
            One list of hits per query, best first. A (D,) query still gets a list of one list.

        Raises:
            ValueError: If ``k``, ``unit`` or ``where`` are invalid, or the queries have the
                wrong dim, are not normalised, or contain NaN.
        """
        check_unit(unit)
        k = self._check_k(k)
        _check_search_params(nprobe, ef_search)
        queries = self._check_queries(query_embeds)  # (Q, D)
        if len(queries) == 0:
            return []
        allowed = allowed_rows(self._items, where)
        return self._search(queries, k, unit, allowed, nprobe, ef_search)

    def search_by_case(
        self,
        case_id: str,
        k: int = 10,
        unit: str = "case",
        where: Where | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> list[Hit]:
        """Find the cases (or images) most similar to a stored case, excluding that case.

        Every image of the case is a query; a candidate scores its best match against any of
        them, so a case with clinical and dermoscopic images finds neighbours of either view.

        Raises:
            ValueError: If ``case_id`` is not in the index, or other arguments are invalid.
        """
        check_unit(unit)
        k = self._check_k(k)
        _check_search_params(nprobe, ef_search)
        rows = self._rows_of(case_id)
        queries = np.asarray(self._vectors[rows], dtype=np.float32)  # (R, D)
        allowed = allowed_rows(self._items, where)
        own = np.zeros(len(self), dtype=bool)
        own[rows] = True
        allowed = ~own if allowed is None else allowed & ~own
        per_query = self._search(queries, k, unit, allowed, nprobe, ef_search)
        return merge_hits(per_query, k, unit, exclude_case=case_id)

    def _search(
        self,
        queries: np.ndarray,
        k: int,
        unit: str,
        allowed: np.ndarray | None,
        nprobe: int | None,
        ef_search: int | None,
    ) -> list[list[Hit]]:
        rows = np.flatnonzero(allowed) if allowed is not None else None
        n_rows = len(self) if rows is None else len(rows)
        if unit == "item":
            target = min(k, n_rows)
            scores, ids = self._neighbours(queries, target, rows, nprobe, ef_search)
            pairs = zip(scores, ids, strict=True)
            return [rank_hits(s, i, self._items, target, unit) for s, i in pairs]

        cases = {self._items[r]["case_id"] for r in rows} if rows is not None else self._case_rows
        target = min(k, len(cases))
        # Neighbours of one case crowd out others, so fetch more images than cases wanted.
        # `cap` images always span `target` cases: a case has at most `_max_case_size` images.
        cap = min(n_rows, target * self._max_case_size)
        mean_case_size = n_rows / max(1, len(cases))
        fetch = min(cap, max(2 * target, math.ceil(1.5 * target * mean_case_size)))
        results: list[list[Hit]] = [[] for _ in range(len(queries))]
        pending = np.arange(len(queries))
        while len(pending) and target:
            scores, ids = self._neighbours(queries[pending], fetch, rows, nprobe, ef_search)
            short = []
            for q, s, i in zip(pending.tolist(), scores, ids, strict=True):
                results[q] = rank_hits(s, i, self._items, target, unit)
                if len(results[q]) < target and fetch < cap:
                    short.append(q)
            if short:
                logger.debug("%d queries found < %d cases in %d images", len(short), target, fetch)
            pending = np.asarray(short, dtype=np.int64)
            fetch = min(cap, 2 * fetch)
        return results

    def _neighbours(
        self,
        queries: np.ndarray,
        fetch: int,
        rows: np.ndarray | None,
        nprobe: int | None,
        ef_search: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, fetch) scores and row ids from FAISS, completed exactly where it fell short.

        An approximate index may return fewer than ``fetch`` ids (padding -1): IVF when the
        probed lists hold too few candidates, HNSW when a filter prunes its graph walk. Such
        queries are answered by exact search over the allowed rows, so a search returns k
        results whenever k rows qualify.
        """
        if fetch == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        gpu = self._gpu_index() if rows is None and nprobe is None else None
        if self.spec.kind == "flat_ip" and gpu is None:
            # Exact search on the CPU is one BLAS matrix product; numpy's runs about twice as
            # fast as faiss-cpu's flat scan here (benchmarks/bench_index.py).
            return self._exact(queries, fetch, rows)
        selector = faiss.IDSelectorBatch(rows.astype(np.int64)) if rows is not None else None
        params = search_parameters(self.spec, nprobe, ef_search, selector)
        # PQ codes only approximate the scores: take more candidates and rerank them exactly.
        ask = fetch * PQ_RERANK if self.spec.kind == "ivf_pq" else fetch
        if gpu is not None:
            scores, ids = gpu.search(queries, ask)
        else:
            scores, ids = self._index.search(queries, ask, params=params)
        if ask != fetch:
            scores, ids = self._rerank(queries, ids, fetch)
        available = len(self) if rows is None else len(rows)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < min(fetch, available))
        if len(short):
            logger.debug("%d queries completed by exact search", len(short))
            exact_scores, exact_ids = self._exact(queries[short], fetch, rows)
            scores, ids = scores.copy(), ids.copy()
            scores[short], ids[short] = exact_scores, exact_ids
        return scores, ids

    def _rerank(
        self, queries: np.ndarray, ids: np.ndarray, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate ids (-1 padding stays last), best ``fetch`` kept."""
        vectors = np.asarray(self._vectors[np.maximum(ids, 0).ravel()]).reshape(*ids.shape, -1)
        exact = np.einsum("qd,qfd->qf", queries, vectors)  # (Q, F)
        exact[ids < 0] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")[:, :fetch]
        return np.take_along_axis(exact, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _exact(
        self, queries: np.ndarray, fetch: int, rows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        candidates = np.arange(len(self)) if rows is None else rows
        vectors = self._vectors if rows is None else self._vectors[rows]  # no copy of them all
        sims = queries @ np.asarray(vectors).T  # (Q, C)
        take = min(fetch, len(candidates))
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        scores = np.full((len(queries), fetch), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), fetch), -1, dtype=np.int64)
        scores[:, :take] = np.take_along_axis(top_sims, order, axis=1)
        ids[:, :take] = candidates[np.take_along_axis(top, order, axis=1)]
        return scores, ids

    def _gpu_index(self) -> faiss.Index | None:
        if not self._gpu_tried:
            self._gpu_tried = True
            self._gpu = to_gpu(self._index, self.spec.kind)
        return self._gpu

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        return int(k)

    def _check_queries(self, query_embeds: np.ndarray) -> np.ndarray:
        shape = np.shape(query_embeds)
        if len(shape) in (1, 2) and shape[-1] != self.dim:
            raise ValueError(
                f"query_embeds have dim {shape[-1]} but this index expects {self.dim}: it was "
                f"built with model {self.model_id!r}. Encode queries with that model, or rebuild "
                "the index with `skinclip index` for the model you are using."
            )
        return as_unit_rows(query_embeds, "query_embeds", dim=self.dim)

    def _rows_of(self, case_id: str) -> list[int]:
        if case_id not in self._case_rows:
            raise ValueError(
                f"case_id {case_id!r} is not in this index of {self.n_cases} cases (ids look "
                f"like {', '.join(map(repr, self.case_ids[:3]))})."
            )
        return self._case_rows[case_id]

    # Persistence

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder``, replacing any index already there.

        The files are written into a temporary sibling folder that is renamed into place only
        once complete, so a crash mid-save leaves the previous index readable.

        Raises:
            ValueError: If ``folder`` holds something other than an index.
        """
        folder = Path(folder)
        write_index_folder(folder, self._index, self._vectors, self._items, self.manifest)
        logger.info("Saved %r to %s", self, folder)
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        expected_model_id: str | None = None,
        expected_dim: int | None = None,
        expected_model_checksum: str | None = None,
    ) -> CaseIndex:
        """Read an index written by `save`, checking that it fits the model in use.

        Args:
            folder: The index folder.
            expected_model_id: If given, the model the caller will encode queries with.
            expected_dim: If given, the embedding dim of that model.
            expected_model_checksum: If given (and the index recorded one), the checksum of
                that model's weights.

        Raises:
            FileNotFoundError: If the folder or one of its files is missing.
            ValueError: If the index was built with another model or dim, or its files are
                corrupt or disagree with each other.
        """
        folder = Path(folder)
        index, vectors, items, manifest = read_index_folder(
            folder,
            model_id=expected_model_id,
            dim=expected_dim,
            model_checksum=expected_model_checksum,
        )
        logger.info("Loaded %d images in %d cases from %s", len(items), manifest.n_cases, folder)
        return cls(index, vectors, items, manifest)
