"""Classification metrics with bootstrap intervals, confusion matrices and subgroups.

Every metric takes ``probs`` (N, C), rows summing to one, and integer ``targets`` (N,).
Averages over classes ("macro") count only the classes that occur in ``targets``: a slice of a
benchmark that never contains a class is not scored as if it had missed it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence

import torch
import torchmetrics.functional.classification as tmf

logger = logging.getLogger(__name__)

# Calibration bins for ECE and the reliability diagram.
ECE_BINS = 15


def _present(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(targets, minlength=num_classes) > 0


def accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(tmf.multiclass_accuracy(probs, targets, probs.shape[1], average="micro"))


def balanced_accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean per-class recall over the classes present in ``targets``."""
    recall = tmf.multiclass_recall(probs, targets, probs.shape[1], average="none")
    return float(recall[_present(targets, probs.shape[1])].mean())


def macro_f1(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean per-class F1 over the classes present in ``targets``."""
    f1 = tmf.multiclass_f1_score(probs, targets, probs.shape[1], average="none")
    return float(f1[_present(targets, probs.shape[1])].mean())


def top5_accuracy(probs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(tmf.multiclass_accuracy(probs, targets, probs.shape[1], top_k=5, average="micro"))


def macro_auroc(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean one-vs-rest AUROC over the classes with both positives and negatives.

    Returns NaN when no class qualifies (a slice holding a single class).
    """
    counts = torch.bincount(targets, minlength=probs.shape[1])
    scorable = (counts > 0) & (counts < len(targets))
    if not scorable.any():
        return float("nan")
    with warnings.catch_warnings():
        # torchmetrics warns about the classes we leave out below.
        warnings.simplefilter("ignore", UserWarning)
        auroc = tmf.multiclass_auroc(probs, targets, probs.shape[1], average="none")
    return float(auroc[scorable].mean())


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-label ECE: confidence against accuracy in equal-width bins, weighted by bin size."""
    return float(tmf.multiclass_calibration_error(probs, targets, probs.shape[1], n_bins=ECE_BINS))


def metric_functions(num_classes: int) -> dict[str, Callable]:
    """The report's metrics for a problem with ``num_classes`` classes."""
    metrics = {
        "accuracy": accuracy,
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": macro_f1,
        "auroc": macro_auroc,
        "ece": expected_calibration_error,
    }
    if num_classes > 5:
        metrics["top5_accuracy"] = top5_accuracy
    return metrics


def confusion_matrix(probs: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    """Counts, rows = true class, columns = predicted class."""
    matrix = tmf.multiclass_confusion_matrix(probs, targets, probs.shape[1])
    return matrix.tolist()


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: its range, size, mean confidence and accuracy (empty bins left out)."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        # The first bin is closed on the left so a confidence of exactly 0 is counted.
        in_bin = (confidence > lo) & (confidence <= hi) if lo > 0 else confidence <= hi
        if in_bin.any():
            rows.append(
                {
                    "low": lo,
                    "high": hi,
                    "count": int(in_bin.sum()),
                    "confidence": float(confidence[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                }
            )
    return rows


def bootstrap_intervals(
    probs: torch.Tensor,
    targets: torch.Tensor,
    metrics: dict[str, Callable],
    resamples: int = 500,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile 95% intervals from resampling the images with replacement.

    The seed is fixed, so a report is reproducible. Resamples where a metric is undefined
    (NaN AUROC) are left out of that metric's interval.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(targets)
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(resamples):
        rows = torch.randint(0, n, (n,), generator=generator)
        for name, fn in metrics.items():
            value = fn(probs[rows], targets[rows])
            if value == value:  # not NaN
                draws[name].append(value)
    intervals = {}
    for name, values in draws.items():
        if values:
            q = torch.quantile(torch.tensor(values), torch.tensor([0.025, 0.975]))
            intervals[name] = [float(q[0]), float(q[1])]
    return intervals


def check_inputs(probs: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse what would give silently wrong metrics: mismatched lengths, targets outside the
    classes, and rows that are not probability distributions (logits, NaN)."""
    if len(targets) == 0:
        raise ValueError("No labelled images to score.")
    if probs.ndim != 2 or len(probs) != len(targets):
        raise ValueError(f"probs {tuple(probs.shape)} and targets ({len(targets)},) disagree.")
    if targets.min() < 0 or targets.max() >= probs.shape[1]:
        raise ValueError(f"targets must lie in 0..{probs.shape[1] - 1}.")
    sums = probs.sum(dim=1)
    if not torch.isfinite(probs).all() or (probs < 0).any() or (sums - 1).abs().max() > 1e-3:
        raise ValueError("probs must be finite, non-negative rows summing to 1 (not logits).")


def score(probs: torch.Tensor, targets: torch.Tensor, resamples: int = 500, seed: int = 0) -> dict:
    """All report metrics, their 95% intervals and the confusion matrix.

    Args:
        probs: (N, C) class probabilities.
        targets: (N,) true class indices.
        resamples: Bootstrap resamples; 0 skips the intervals.
        seed: Bootstrap seed.
    """
    check_inputs(probs, targets)
    metrics = metric_functions(probs.shape[1])
    result = {"n": len(targets), **{name: fn(probs, targets) for name, fn in metrics.items()}}
    if resamples:
        result["ci95"] = bootstrap_intervals(probs, targets, metrics, resamples, seed)
    result["confusion_matrix"] = confusion_matrix(probs, targets)
    result["support"] = torch.bincount(targets, minlength=probs.shape[1]).tolist()
    return result


def subgroup_scores(
    probs: torch.Tensor,
    targets: torch.Tensor,
    metas: Sequence[dict],
    columns: Sequence[str],
    min_size: int = 1,
) -> dict[str, dict[str, dict]]:
    """Metrics per value of each metadata column, with the subgroup sizes.

    Images without a value for a column form the subgroup ``"(missing)"``. Intervals are
    left out here; subgroups are compared by their sizes and point values.
    """
    result: dict[str, dict[str, dict]] = {}
    metrics = metric_functions(probs.shape[1])
    known = sorted({key for meta in metas for key in meta})
    for column in columns:
        if column not in known:
            logger.warning("No image has a %r field; the fields are: %s", column, ", ".join(known))
        groups: dict[str, list[int]] = {}
        for i, meta in enumerate(metas):
            value = meta.get(column)
            key = "(missing)" if value in (None, "") else str(value)
            groups.setdefault(key, []).append(i)
        result[column] = {}
        for value, rows in sorted(groups.items()):
            if len(rows) < min_size:
                continue
            index = torch.tensor(rows)
            result[column][value] = {
                "n": len(rows),
                **{name: fn(probs[index], targets[index]) for name, fn in metrics.items()},
            }
    return result
