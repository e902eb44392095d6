"""Deterministic train/val/test assignment by case, so both images of a case share a split."""

from __future__ import annotations

import hashlib
import logging

from skinclip.data.records import SPLITS

logger = logging.getLogger(__name__)

# 8 bytes of the digest give 2**64 buckets, far finer than any fraction a user would pass.
_HASH_BYTES = 8
_HASH_RANGE = float(2 ** (8 * _HASH_BYTES))


def split_fraction(case_id: str) -> float:
    """Map a case id to a stable number in ``[0, 1)``.

    Python's built-in ``hash`` is salted per process, so it would reshuffle the splits on every
    run; SHA-256 gives the same number on every machine and Python version.

    Args:
        case_id: Identifier of the case (one textbook or atlas entry).

    Returns:
        A float in ``[0, 1)`` that depends only on ``case_id``.
    """
    digest = hashlib.sha256(str(case_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:_HASH_BYTES], "big") / _HASH_RANGE


def hash_split(case_id: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """Assign a case to ``train``, ``val`` or ``test`` by a stable hash of its id.

    Args:
        case_id: Identifier of the case; every image of the case gets the same split.
        val_fraction: Expected share of cases in ``val``.
        test_fraction: Expected share of cases in ``test``.

    Returns:
        One of ``SPLITS``.

    Raises:
        ValueError: If a fraction is negative or the two add up to 1 or more.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"Split fractions must be >= 0 and leave room for train; got val_fraction="
            f"{val_fraction}, test_fraction={test_fraction}. Use e.g. 0.1 and 0.1."
        )
    u = split_fraction(case_id)
    if u < test_fraction:
        return SPLITS[2]
    if u < test_fraction + val_fraction:
        return SPLITS[1]
    return SPLITS[0]
