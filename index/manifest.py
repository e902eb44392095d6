"""The ``manifest.json`` of an index folder: what built the index and how to read it back."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

logger = logging.getLogger(__name__)

# 2: IVF/HNSW layouts, vectors.npy, items.sqlite.
FORMAT_VERSION = 2


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Manifest:
    """Facts about an index that a reader must check before trusting its scores.

    Attributes:
        model_id: The model whose image tower produced the embeddings.
        model_checksum: Checksum of that model's weights, or None if unknown. Two fine-tunes
            can share a ``model_id``; the checksum tells them apart.
        embed_dim: Width D of every stored embedding.
        index_type: Key of the FAISS index layout, e.g. ``"flat_ip"`` or ``"hnsw"``.
        metric: How scores are computed; ``"inner_product"`` (cosine on unit vectors).
        count: Number of indexed images.
        n_cases: Number of distinct cases among them.
        index_params: The layout's parameters (:class:`index.types.IndexSpec`), with the note
            on why it was chosen.
        created_at: UTC time of the build, ISO 8601.
        format_version: Version of the folder layout.
    """

    model_id: str
    model_checksum: str | None
    embed_dim: int
    index_type: str
    metric: str
    count: int
    n_cases: int
    index_params: dict
    created_at: str = field(default_factory=_utc_now)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read and check a manifest file.

        Raises:
            ValueError: If the file is not a JSON object with the expected fields, or was
                written by a newer format version than this code understands.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}). Rebuild the index with `skinclip index`."
            ) from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object. Rebuild with `skinclip index`.")

        version = data.get("format_version")
        if version == 1:
            raise ValueError(
                f"{path} is an index of format 1 (before IVF/HNSW support). Rebuild it with "
                "`skinclip index`."
            )
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version!r}, but this code reads versions up to "
                f"{FORMAT_VERSION}. Upgrade skinclip or rebuild the index with `skinclip index`."
            )
        missing = sorted(set(cls.__dataclass_fields__) - set(data))
        if missing:
            raise ValueError(
                f"{path} lacks field(s) {missing}. Rebuild the index with `skinclip index`."
            )
        if not isinstance(data.get("index_params"), dict) or not isinstance(
            data.get("embed_dim"), int
        ):
            raise ValueError(
                f"{path} has a malformed index_params or embed_dim. Rebuild the index with "
                "`skinclip index`."
            )
        # Unknown fields are dropped so that older readers tolerate additive changes.
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})
