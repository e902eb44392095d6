"""Repeat-factor sampling of rare diagnosis groups."""

import json
import random
from collections import Counter

import pytest

from skinclip.train.balance import expected_size, group_of, repeat_factors, repeat_rare


def test_repeat_factors_hand_computed():
    counts = Counter({"nevus": 256, "melanoma": 64, "seborrheic keratosis": 16})
    factors = repeat_factors(counts, power=0.5)
    assert factors == {"nevus": 1.0, "melanoma": 2.0, "seborrheic keratosis": 4.0}
    assert expected_size(counts, factors) == 256 + 128 + 64
    assert repeat_factors(counts, power=0.0) == {g: 1.0 for g in counts}


def test_repeat_rare_matches_fractional_factors_on_average():
    random.seed(0)
    samples = [{"json": json.dumps({"diagnosis_group": "sk"}).encode()}] * 4000
    out = list(repeat_rare(iter(samples), {"sk": 2.5}))
    assert len(out) / len(samples) == pytest.approx(2.5, abs=0.05)


def test_group_falls_back_to_diagnosis():
    assert group_of({"diagnosis": "lentigo"}) == "lentigo"
    assert group_of({"diagnosis_group": "nevus", "diagnosis": "blue nevus"}) == "nevus"
    assert group_of({"label": "nevus"}) == "nevus"  # label CSVs and folder trees
    assert group_of({}) == "unknown"
