"""Repeat-factor sampling: show rare diagnoses more often within a streamed epoch.

Each sample of group g is repeated r(g) = max(1, (n_max / n_g) ** power) times in expectation
(the integer part always, the fraction by chance), the scheme LVIS uses for rare classes.
With ``power=0.5`` a group 16x rarer than the largest is seen 4x as often, not 16x, so rare
images are not memorised.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterator

import webdataset as wds

from skinclip.data.shards import every_shard

logger = logging.getLogger(__name__)


def diagnosis_group_of(meta: dict) -> str:
    """The coarse diagnosis group if known, else the diagnosis, else the class ``label`` of
    label CSVs and folder trees; "" when the sample names none."""
    return str(meta.get("diagnosis_group") or meta.get("diagnosis") or meta.get("label") or "")


def group_of(meta: dict) -> str:
    """The balancing group (:func:`diagnosis_group_of`); samples naming none share one."""
    return diagnosis_group_of(meta) or "unknown"


def count_groups(urls: list[str]) -> Counter:
    """Count samples per group by reading only the metadata of each shard sample."""
    counts: Counter = Counter()
    # Every process counts all shards (no split by node), so all agree on the repeat factors.
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=every_shard, empty_check=False)
    for sample in dataset:
        counts[group_of(json.loads(sample["json"]))] += 1
    return counts


def repeat_factors(counts: Counter, power: float = 0.5) -> dict[str, float]:
    if not counts:
        return {}
    largest = max(counts.values())
    return {g: max(1.0, (largest / n) ** power) for g, n in counts.items()}


def expected_size(counts: Counter, factors: dict[str, float]) -> int:
    """Samples per epoch after repetition."""
    return math.ceil(sum(n * factors.get(g, 1.0) for g, n in counts.items()))


def repeat_rare(samples: Iterator[dict], factors: dict[str, float]) -> Iterator[dict]:
    """Yield each raw shard sample r(g) times in expectation; its group read from ``json``."""
    for sample in samples:
        factor = factors.get(group_of(json.loads(sample["json"])), 1.0)
        repeats = int(factor) + (random.random() < factor - int(factor))
        for _ in range(repeats):
            yield sample
