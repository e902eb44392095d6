"""The on-disk index folder: ``index.faiss``, ``items.jsonl`` and ``manifest.json``.

Reading checks the manifest against the caller's model before touching the vectors, and checks
that the three files agree, so a stale or half-copied folder fails loudly instead of returning
wrong neighbours.
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
ITEMS_FILE = "items.jsonl"
MANIFEST_FILE = "manifest.json"
REBUILD_HINT = "Rebuild it with `skinclip index`."


def write_index_folder(
    folder: Path, index: faiss.Index, items: list[dict], manifest: Manifest
) -> None:
    """Write the three files into a temporary sibling folder, then swap it in for ``folder``."""
    with replace_folder(folder, marker=MANIFEST_FILE) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        write_items(items, tmp / ITEMS_FILE)
        (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        for name in (INDEX_FILE, ITEMS_FILE, MANIFEST_FILE):
            fsync_file(tmp / name)


def read_index_folder(
    folder: Path,
    known_index_types: list[str],
    model_id: str | None = None,
    dim: int | None = None,
    model_checksum: str | None = None,
) -> tuple[faiss.Index, list[dict], Manifest]:
    """Read and cross-check an index folder; see `CaseIndex.load` for the arguments."""
    if not folder.is_dir():
        raise FileNotFoundError(f"No case index at {folder}. Build one with `skinclip index`.")
    for name in (MANIFEST_FILE, INDEX_FILE, ITEMS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing, so {folder} is not a complete index. " + REBUILD_HINT
            )

    # Check the model before reading the (possibly large) vectors.
    manifest = Manifest.read(folder / MANIFEST_FILE)
    check_model(manifest, folder, model_id, dim, model_checksum)
    if manifest.index_type not in known_index_types:
        raise ValueError(
            f"{folder / MANIFEST_FILE} has index_type {manifest.index_type!r}; this code "
            f"reads {sorted(known_index_types)}. Upgrade skinclip or rebuild the index."
        )

    try:
        index = faiss.read_index(str(folder / INDEX_FILE))
    except RuntimeError as err:
        raise ValueError(f"{folder / INDEX_FILE} is unreadable ({err}). {REBUILD_HINT}") from err
    try:
        items = clean_items(read_items(folder / ITEMS_FILE))
    except ValueError as err:
        raise ValueError(f"{folder / ITEMS_FILE}: {err} {REBUILD_HINT}") from err
    check_consistent(folder, manifest, index, items)
    return index, items, manifest


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
        "Rebuild the index with this model (`skinclip index`), or load the checkpoint of "
        f"model {manifest.model_id!r}."
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
    folder: Path, manifest: Manifest, index: faiss.Index, items: list[dict]
) -> None:
    """Raise if the vectors, the item rows and the manifest disagree."""
    counts = {
        INDEX_FILE: index.ntotal,
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
    if index.d != manifest.embed_dim:
        raise ValueError(
            f"Index at {folder} is corrupt: {INDEX_FILE} has dim {index.d} but {MANIFEST_FILE} "
            f"says {manifest.embed_dim}. {REBUILD_HINT}"
        )
    if hasattr(index, "id_map"):
        ids = faiss.vector_to_array(index.id_map)
        if not np.array_equal(ids, np.arange(len(items))):
            raise ValueError(
                f"Index at {folder} is corrupt: {INDEX_FILE} ids are not rows 0..{len(items) - 1}"
                f" of {ITEMS_FILE}. {REBUILD_HINT}"
            )
