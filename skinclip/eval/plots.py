"""PNG figures for evaluation reports: confusion matrices and reliability diagrams."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> None:
    # Written beside the target and renamed, so a killed run never leaves half a PNG.
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def plot_confusion(matrix: Sequence[Sequence[int]], names: Sequence[str], title: str, path: Path):
    """Row-normalised confusion matrix with the raw counts written in each cell."""
    n = len(names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    totals = [max(1, sum(row)) for row in matrix]
    shares = [[c / t for c in row] for row, t in zip(matrix, totals, strict=True)]
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [s[:28] for s in names], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), [s[:28] for s in names], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                colour = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6, color=colour)
    _save(fig, path)


def plot_reliability(curves: dict[str, list[dict]], title: str, path: Path):
    """Accuracy against confidence per bin, one line per curve (e.g. before/after scaling)."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    for label, bins in curves.items():
        ax.plot(
            [b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=label
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)
