"""The on-disk index folder: ``index.faiss``, ``vectors.npy``, ``items.sqlite`` and
``manifest.json``.

Reading checks the manifest against the caller's model before touching the vectors, and checks
that the files agree, so a stale or half-copied folder fails loudly instead of returning wrong
neighbours. The exact vectors are kept beside the FAISS index (memory-mapped on load): they
serve filtered searches exactly when an approximate index finds too few matches, and let
approximate layouts be rebuilt without re-encoding images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np

from index.folder import fsync_file, replace_folder
from index.items import clean_items, read_items, write_items
from index.manifest import Manifest

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
ITEMS_FILE = "items.sqlite"
MANIFEST_FILE = "manifest.json"
FILES = (MANIFEST_FILE, INDEX_FILE, VECTORS_FILE, ITEMS_FILE)
REBUILD_HINT = "Rebuild it with `skinclip index`."


def write_index_folder(
    folder: Path,
    index: faiss.Index,
    vectors: np.ndarray,
    items: list[dict],
    manifest: Manifest,
) -> None:
    """Write the files into a temporary sibling folder, then swap it in for ``folder``."""
    with replace_folder(folder, marker=MANIFEST_FILE) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        np.save(tmp / VECTORS_FILE, np.asarray(vectors, dtype=np.float32))
        write_items(items, tmp / ITEMS_FILE)
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        for name in FILES:
            fsync_file(tmp / name)


def read_index_folder(
    folder: Path,
    model_id: str | None = None,
    dim: int | None = None,
    model_checksum: str | None = None,
) -> tuple[faiss.Index, np.ndarray, list[dict], Manifest]:
    """Read and cross-check an index folder; see `CaseIndex.load` for the arguments."""
    if not folder.is_dir():
        raise FileNotFoundError(f"No case index at {folder}. Build one with `skinclip index`.")
    for name in FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing, so {folder} is not a complete index. " + REBUILD_HINT
            )

    # Check the model before reading the (possibly large) vectors.
    manifest = Manifest.read(folder / MANIFEST_FILE)
    check_model(manifest, folder, model_id, dim, model_checksum)
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
    except RuntimeError as err:
        raise ValueError(f"{folder / INDEX_FILE} is unreadable ({err}). {REBUILD_HINT}") from err
    try:
        vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise ValueError(f"{folder / VECTORS_FILE} is unreadable ({err}). {REBUILD_HINT}") from err
    try:
        items = clean_items(read_items(folder / ITEMS_FILE))
    except ValueError as err:
        raise ValueError(f"{err} {REBUILD_HINT}") from err
    if vectors.ndim != 2:
        raise ValueError(
            f"{folder / VECTORS_FILE} holds an array of shape {vectors.shape}, not (N, D). "
            + REBUILD_HINT
        )
    check_consistent(folder, manifest, index, vectors, items)
    return index, vectors, items, manifest


def check_model(
    manifest: Manifest,
    folder: Path,
    model_id: str | None,
    dim: int | None,
    checksum: str | None,
) -> None:
    """Raise if the index was built by a different model than the caller's."""
    built = f"The index at {folder} was built with model {manifest.model_id!r}"
    fix = (
        "Rebuild the index with this model (`skinclip index build`), or pass the checkpoint "
        f"the index was built with (--checkpoint PATH; its model id is {manifest.model_id!r})."
    )
    if model_id is not None and model_id != manifest.model_id:
        raise ValueError(f"{built}, but the current model is {model_id!r}. {fix}")
    if dim is not None and dim != manifest.embed_dim:
        raise ValueError(
            f"{built} ({manifest.embed_dim}-dim embeddings), but the current model produces "
            f"{dim}-dim embeddings. {fix}"
        )
    # An index without a recorded checksum cannot be checked, so it is accepted.
    if checksum is not None and manifest.model_checksum not in (None, checksum):
        raise ValueError(
            f"{built} with weights checksum {manifest.model_checksum!r}, but the current "
            f"weights have checksum {checksum!r}. {fix}"
        )


def check_consistent(
    folder: Path,
    manifest: Manifest,
    index: faiss.Index,
    vectors: np.ndarray,
    items: list[dict],
) -> None:
    """Raise if the vectors, the item rows and the manifest disagree."""
    counts = {
        INDEX_FILE: index.ntotal,
        VECTORS_FILE: len(vectors),
        ITEMS_FILE: len(items),
        f"{MANIFEST_FILE} count": manifest.count,
    }
    if len(set(counts.values())) != 1:
        raise ValueError(f"Index at {folder} is corrupt: counts disagree {counts}. {REBUILD_HINT}")
    n_cases = len({item["case_id"] for item in items})
    if n_cases != manifest.n_cases:
        raise ValueError(
            f"Index at {folder} is corrupt: {ITEMS_FILE} has {n_cases} cases but "
            f"{MANIFEST_FILE} says {manifest.n_cases}. {REBUILD_HINT}"
        )
    for name, width in ((INDEX_FILE, index.d), (VECTORS_FILE, vectors.shape[1])):
        if width != manifest.embed_dim:
            raise ValueError(
                f"Index at {folder} is corrupt: {name} has dim {width} but {MANIFEST_FILE} "
                f"says {manifest.embed_dim}. {REBUILD_HINT}"
            )
