"""`CaseIndex`: image embeddings of atlas cases in FAISS, searchable by image or by case."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

from index.hits import Hit, check_unit, merge_hits, rank_hits
from index.items import clean_items
from index.manifest import Manifest
from index.persist import read_index_folder, write_index_folder
from index.vectors import as_unit_rows

logger = logging.getLogger(__name__)


def _flat_ip(dim: int) -> faiss.Index:
    # Exact search; the id map keeps row ids stable if a later index type reorders vectors.
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


# Index layouts by manifest key: (factory, metric). Approximate layouts plug in here; search
# already tolerates the -1 padding they return when a probe finds too few neighbours. A factory
# must return an index that supports `reconstruct`, which `search_by_case` relies on.
INDEX_TYPES: dict[str, tuple[Callable[[int], faiss.Index], str]] = {
    "flat_ip": (_flat_ip, "inner_product"),
}


class CaseIndex:
    """A searchable index of case images with their metadata.

    Each row is one image (an *item*); images of the same case share a ``case_id``. Scores
    are cosine similarities, since both stored and query embeddings are L2-normalised.
    Create one with `CaseIndex.build` or `CaseIndex.load`.
    """

    def __init__(self, index: faiss.Index, items: list[dict], manifest: Manifest) -> None:
        assert index.ntotal == len(items) == manifest.count, "index, items and manifest disagree"
        self._index = index
        self._items = items
        self.manifest = manifest
        self._case_rows: dict[str, list[int]] = {}
        for row, item in enumerate(items):
            self._case_rows.setdefault(item["case_id"], []).append(row)
        self._max_case_size = max((len(rows) for rows in self._case_rows.values()), default=0)

    @classmethod
    def build(
        cls,
        embeds: np.ndarray,
        items: Sequence[dict],
        model_id: str,
        model_checksum: str | None = None,
        index_type: str = "flat_ip",
    ) -> CaseIndex:
        """Build an index from image embeddings and their metadata rows.

        Args:
            embeds: (N, D) L2-normalised image embeddings. Rows within 1e-2 of unit norm are
                renormalised; rows further off raise, since they mean normalisation was skipped.
            items: N metadata dicts in row order, each with a unique ``key`` and a ``case_id``;
                other fields (caption, diagnosis, modality, image_path, ...) are kept as given.
            model_id: The model that produced ``embeds``; queries must come from it too.
            model_checksum: Checksum of that model's weights, if known.
            index_type: Index layout; one of `INDEX_TYPES`.

        Returns:
            The built index.

        Raises:
            ValueError: If the embeddings or items are malformed or disagree in length.
        """
        if index_type not in INDEX_TYPES:
            raise ValueError(
                f"index_type must be one of {sorted(INDEX_TYPES)}; got {index_type!r}."
            )
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string; got {model_id!r}.")
        embeds = as_unit_rows(embeds, "embeds")  # (N, D) float32
        if len(embeds) == 0:
            raise ValueError("embeds has no rows; an index needs at least one image.")
        if len(embeds) != len(items):
            raise ValueError(
                f"embeds has {len(embeds)} rows but items has {len(items)} entries; "
                "they must describe the same images in the same order."
            )
        items = clean_items(items)

        factory, metric = INDEX_TYPES[index_type]
        index = factory(embeds.shape[1])
        index.add_with_ids(embeds, np.arange(len(embeds), dtype=np.int64))
        manifest = Manifest(
            model_id=model_id,
            model_checksum=model_checksum,
            embed_dim=int(embeds.shape[1]),
            index_type=index_type,
            metric=metric,
            count=len(items),
            n_cases=len({item["case_id"] for item in items}),
        )
        logger.info(
            "Built %s index of %d images in %d cases (dim %d, model %s)",
            index_type,
            manifest.count,
            manifest.n_cases,
            manifest.embed_dim,
            model_id,
        )
        return cls(index, items, manifest)

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
            f"model_id={self.model_id!r}, index_type={self.manifest.index_type!r})"
        )

    def item(self, row: int) -> dict:
        """A copy of the metadata row of image ``row``."""
        return dict(self._items[row])

    def case_items(self, case_id: str) -> list[dict]:
        """Copies of the metadata rows of every image of one case, in index order."""
        return [dict(self._items[row]) for row in self._rows_of(case_id)]

    # Search

    def search(self, query_embeds: np.ndarray, k: int = 10, unit: str = "case") -> list[list[Hit]]:
        """Find the images or cases closest to each query.

        Args:
            query_embeds: (Q, D) or (D,) L2-normalised query embeddings (text or image) from
                the model the index was built with.
            k: Number of hits per query. If the index holds fewer cases (or images, for
                ``unit="item"``), all of them are returned.
            unit: ``"case"`` returns distinct cases, each ranked by and naming its
                best-matching image; ``"item"`` returns individual images.

        Returns:
            One list of hits per query, best first. A (D,) query still gets a list of one list.

        Raises:
            ValueError: If ``k`` or ``unit`` is invalid, or the queries have the wrong dim,
                are not normalised, or contain NaN.
        """
        check_unit(unit)
        k = self._check_k(k)
        queries = self._check_queries(query_embeds)  # (Q, D)
        if len(queries) == 0:
            return []
        return self._search(queries, k, unit)

    def search_by_case(self, case_id: str, k: int = 10, unit: str = "case") -> list[Hit]:
        """Find the cases (or images) most similar to a stored case, excluding that case.

        Every image of the case is a query; a candidate scores its best match against any of
        them, so a case with clinical and dermoscopic images finds neighbours of either view.

        Args:
            case_id: A case in this index.
            k: Number of hits.
            unit: ``"case"`` or ``"item"``, as in `search`.

        Returns:
            Hits, best first, none from ``case_id`` itself.

        Raises:
            ValueError: If ``case_id`` is not in the index, or ``k``/``unit`` are invalid.
        """
        check_unit(unit)
        k = self._check_k(k)
        rows = self._rows_of(case_id)
        queries = np.stack([self._index.reconstruct(row) for row in rows])  # (R, D)

        # Over-ask by what the exclusion can remove: the case itself, or all of its images.
        extra = 1 if unit == "case" else len(rows)
        per_query = self._search(queries, k + extra, unit)
        return merge_hits(per_query, k, unit, exclude_case=case_id)

    def _search(self, queries: np.ndarray, k: int, unit: str) -> list[list[Hit]]:
        n_units = self.n_cases if unit == "case" else len(self)
        target = min(k, n_units)
        if unit == "item":
            scores, ids = self._index.search(queries, target)  # (Q, target) each
            pairs = zip(scores, ids, strict=True)
            return [rank_hits(s, i, self._items, target, unit) for s, i in pairs]

        # Neighbours of one case crowd out others, so fetch more images than cases wanted.
        # `cap` images always span `target` cases: a case has at most `_max_case_size` images.
        cap = min(len(self), target * self._max_case_size)
        mean_case_size = len(self) / self.n_cases
        fetch = min(cap, max(2 * target, math.ceil(1.5 * target * mean_case_size)))
        results: list[list[Hit]] = [[] for _ in range(len(queries))]
        pending = np.arange(len(queries))
        while len(pending):
            scores, ids = self._index.search(queries[pending], fetch)  # (P, fetch) each
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
                f"case_id {case_id!r} is not in this index of {self.n_cases} cases; "
                "see CaseIndex.case_ids for the valid ones."
            )
        return self._case_rows[case_id]

    # Persistence

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder``, replacing any index already there.

        The files are written into a temporary sibling folder that is renamed into place only
        once complete, so a crash mid-save leaves the previous index readable.

        Args:
            folder: Destination. It must be new, empty, or an index folder written before.

        Returns:
            The folder, as a Path.

        Raises:
            ValueError: If ``folder`` holds something other than an index.
        """
        folder = Path(folder)
        write_index_folder(folder, self._index, self._items, self.manifest)
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

        Returns:
            The loaded index.

        Raises:
            FileNotFoundError: If the folder or one of its files is missing.
            ValueError: If the index was built with another model or dim, or its files are
                corrupt or disagree with each other.
        """
        folder = Path(folder)
        index, items, manifest = read_index_folder(
            folder,
            known_index_types=list(INDEX_TYPES),
            model_id=expected_model_id,
            dim=expected_dim,
            model_checksum=expected_model_checksum,
        )
        logger.info("Loaded %d images in %d cases from %s", len(items), manifest.n_cases, folder)
        return cls(index, items, manifest)
