"""Checks that turn user-supplied embeddings into the float32 unit rows FAISS expects."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# Loose enough for embeddings normalised in half precision and then cast to float32, tight
# enough to catch raw (unnormalised) tower outputs, whose norms are nowhere near 1.
NORM_TOLERANCE = 1e-2


def as_unit_rows(embeds: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """Validate L2-normalised embeddings and return them as contiguous float32 rows.

    Rows whose norm is within ``NORM_TOLERANCE`` of 1 are renormalised exactly, so that inner
    products are cosine similarities to float32 precision. Rows further from unit norm are
    rejected rather than silently normalised: they usually mean the caller forgot
    ``normalize=True``, and guessing would hide that mistake.

    Args:
        embeds: Array of shape (N, D), or (D,) for a single vector.
        name: What the array is, for error messages (``"embeds"``, ``"query_embeds"``).
        dim: Expected D, or None to accept any positive width.

    Returns:
        A C-contiguous float32 array of shape (N, D).

    Raises:
        ValueError: If the array is not 1-D or 2-D floats, is empty, has the wrong width,
            holds NaN or infinity, or has rows that are not unit length.
    """
    array = np.asarray(embeds)
    if array.ndim == 1:
        array = array[None, :]  # (D,) -> (1, D)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D) or (D,); got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array; got dtype {array.dtype}.")
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have a positive embedding dim; got shape {array.shape}.")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} has dim {array.shape[1]} but {dim} was expected.")

    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} has NaN or infinite values in {bad.size} row(s), first at row {bad[0]}. "
            "Check the encoder output (e.g. a diverged checkpoint or an fp16 overflow)."
        )

    norms = np.linalg.norm(array, axis=1)  # (N,)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{name} must be L2-normalised, but {int(off.sum())} row(s) are not; row {row} has "
            f"norm {norms[row]:.4f}. Pass normalised embeddings, e.g. "
            "encode_image(..., normalize=True)."
        )
    return np.ascontiguousarray(array / norms[:, None], dtype=np.float32)
