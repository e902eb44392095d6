"""Metadata filters: which index rows a search may return.

A filter maps item fields to what they must hold::

    {"modality": "dermoscopic"}                      # equals
    {"diagnosis": ["melanoma", "nevus"]}             # any of
    {"split": "train", "sex": lambda v: v != "male"} # a predicate on the value

All conditions must hold; an item without the field does not match. String comparison is
exact, so use the values the items store (``skinclip search --where`` lists them on a miss).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Condition = object  # a value, a list/tuple/set of values, or a predicate on the value
Where = Mapping[str, Condition]


def _matcher(field: str, condition: Condition) -> Callable[[object], bool]:
    if callable(condition):
        return condition
    if isinstance(condition, list | tuple | set | frozenset):
        allowed = set(condition)
        if not allowed:
            raise ValueError(f"Filter on {field!r} lists no values; nothing could match.")
        return lambda value: value in allowed
    return lambda value: value == condition


def allowed_rows(items: Sequence[dict], where: Where | None) -> np.ndarray | None:
    """Boolean mask of the rows that pass ``where``; None when there is no filter.

    Raises:
        ValueError: If ``where`` is not a mapping of field names.
    """
    if not where:
        return None
    if not isinstance(where, Mapping):
        raise ValueError(f"where must map field names to values; got {where!r}.")
    tests = [(field, _matcher(field, condition)) for field, condition in where.items()]
    mask = np.fromiter(
        (all(field in item and test(item[field]) for field, test in tests) for item in items),
        dtype=bool,
        count=len(items),
    )
    return mask
