"""Report metrics checked against hand computations."""

import pytest
import torch

from skinclip.eval import classification as C
from skinclip.eval.report import selective_accuracy

# Six images, three classes. Predictions: 0, 1, 1, 2, 2, 2 against truth 0, 0, 1, 1, 2, 2.
PROBS = torch.tensor(
    [
        [0.70, 0.20, 0.10],
        [0.40, 0.50, 0.10],
        [0.10, 0.78, 0.12],
        [0.30, 0.29, 0.41],
        [0.19, 0.19, 0.62],
        [0.10, 0.12, 0.78],
    ]
)
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_point_metrics_match_hand_computation():
    assert C.accuracy(PROBS, TARGETS) == pytest.approx(4 / 6)
    # Recall per class: 1/2, 1/2, 2/2.
    assert C.balanced_accuracy(PROBS, TARGETS) == pytest.approx(2 / 3)
    # Precision 1, 1/2, 2/3 -> F1 2/3, 1/2, 4/5.
    assert C.macro_f1(PROBS, TARGETS) == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    # One-vs-rest: classes 0 and 2 separate perfectly; class 1 ranks 7 of its 8 pairs right.
    assert C.macro_auroc(PROBS, TARGETS) == pytest.approx((1 + 7 / 8 + 1) / 3)
    # Every confidence falls in its own 1/15-wide bin except the two 0.78s (both right).
    gaps = abs(0.70 - 1) + abs(0.50 - 0) + 2 * abs(0.78 - 1) + abs(0.41 - 0) + abs(0.62 - 1)
    assert C.expected_calibration_error(PROBS, TARGETS) == pytest.approx(gaps / 6, abs=1e-6)
    assert C.confusion_matrix(PROBS, TARGETS) == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]


def test_top5_only_beyond_five_classes_and_its_value():
    assert "top5_accuracy" not in C.metric_functions(5)
    probs = torch.full((2, 7), 0.01)
    probs[0, 6] = 0.94
    probs[0, 0] = 0.0  # the true class 0 ranks last, outside the top 5
    probs[1, 1] = 0.5
    probs[1, 3] = 0.44  # class 3 is 2nd
    targets = torch.tensor([0, 3])
    assert C.top5_accuracy(probs, targets) == pytest.approx(0.5)


def test_absent_classes_are_left_out_of_macro_averages():
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])
    targets = torch.tensor([0, 0])
    assert C.balanced_accuracy(probs, targets) == pytest.approx(0.5)
    assert C.macro_auroc(probs, targets) != C.macro_auroc(probs, targets)  # NaN: nothing to rank


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    metrics = C.metric_functions(3)
    first = C.bootstrap_intervals(PROBS, TARGETS, metrics, resamples=200, seed=1)
    again = C.bootstrap_intervals(PROBS, TARGETS, metrics, resamples=200, seed=1)
    assert first == again
    low, high = first["accuracy"]
    assert 0 <= low < 4 / 6 < high <= 1
    perfect = C.bootstrap_intervals(PROBS, PROBS.argmax(1), metrics, resamples=50)
    assert perfect["accuracy"] == [1.0, 1.0]


def test_score_and_subgroups_with_sizes():
    result = C.score(PROBS, TARGETS, resamples=0)
    assert result["n"] == 6 and "ci95" not in result and result["support"] == [2, 2, 2]
    metas = [{"sex": s} for s in ("f", "f", "m", "m", "m", None)]
    groups = C.subgroup_scores(PROBS, TARGETS, metas, ["sex"])["sex"]
    assert {k: v["n"] for k, v in groups.items()} == {"(missing)": 1, "f": 2, "m": 3}
    # "m" holds images 2, 3, 4: right, wrong, right.
    assert groups["m"]["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="No labelled images"):
        C.score(PROBS[:0], TARGETS[:0])


def test_reliability_bins_and_selective_accuracy():
    bins = C.reliability(PROBS, TARGETS)
    assert sum(b["count"] for b in bins) == 6
    top = [b for b in bins if b["count"] == 2][0]
    assert top["confidence"] == pytest.approx(0.78) and top["accuracy"] == 1.0
    rows = selective_accuracy(PROBS, TARGETS, thresholds=(0.0, 0.6, 0.9))
    assert rows[0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": pytest.approx(4 / 6)}
    # At 0.6 the images with confidence 0.70, 0.78, 0.62, 0.78 remain, all right.
    assert rows[1]["coverage"] == pytest.approx(4 / 6) and rows[1]["accuracy"] == 1.0
    assert rows[2] == {"threshold": 0.9, "coverage": 0.0, "accuracy": None}


@pytest.mark.parametrize(
    ("probs", "targets", "message"),
    [
        (PROBS, TARGETS[:5], "disagree"),
        (PROBS, torch.tensor([0, 0, 1, 1, 2, 3]), "targets must lie"),
        (PROBS * 3, TARGETS, "summing to 1"),
        (torch.full((6, 3), float("nan")), TARGETS, "finite"),
    ],
)
def test_score_refuses_what_would_be_silently_wrong(probs, targets, message):
    with pytest.raises(ValueError, match=message):
        C.score(probs, targets, resamples=0)
