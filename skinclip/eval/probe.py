"""Linear probe (MM-Skin's "SFT" protocol): logistic regression on frozen image embeddings.

The regularisation strength C is chosen by cross-validation on the training split alone,
with folds grouped by case so the two images of one lesion never sit on both sides of a
fold; the test split is only predicted, once, with the refitted model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

logger = logging.getLogger(__name__)

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class Probe:
    """A fitted probe and how its C was chosen."""

    classifier: LogisticRegression
    num_classes: int
    c: float
    cv_balanced_accuracy: float
    folds: int

    def predict_proba(self, embeds: torch.Tensor) -> torch.Tensor:
        """(N, num_classes) probabilities; classes absent from training get probability 0."""
        probs = np.zeros((len(embeds), self.num_classes))
        probs[:, self.classifier.classes_] = self.classifier.predict_proba(embeds.numpy())
        return torch.from_numpy(probs).float()

    def summary(self) -> dict:
        return {"C": self.c, "cv_balanced_accuracy": self.cv_balanced_accuracy, "folds": self.folds}


def fit_probe(
    embeds: torch.Tensor,
    targets: torch.Tensor,
    groups: Sequence[str],
    num_classes: int,
    folds: int = 5,
    c_grid: Sequence[float] = C_GRID,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Probe:
    """Choose C by grouped, stratified k-fold on the training split, then refit on all of it.

    Classes are weighted by inverse frequency, since the score that matters is balanced
    accuracy.

    Args:
        embeds: (N, D) training image embeddings.
        targets: (N,) class indices.
        groups: Case id of each image; one case stays within one fold.
        num_classes: Classes in the label set (for the probability columns).
        folds: Cross-validation folds (reduced when the rarest class has fewer cases).
        c_grid: Candidate inverse regularisation strengths.
        seed: Fold shuffling seed.

    Raises:
        ValueError: If fewer than two classes have training images.
    """
    y = targets.numpy()
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError("A linear probe needs training images of at least two classes.")
    # Each fold needs every class, so there can be no more folds than the rarest class has cases.
    cases = {int(c): len(set(np.asarray(groups)[y == c])) for c in present}
    rarest = min(cases.values())
    if rarest < 2:
        single = [class_names[c] if class_names else str(c) for c, n in cases.items() if n < 2]
        raise ValueError(
            "Choosing C by cross-validation needs at least two cases of every class in the "
            f"probe's training data; {', '.join(single)} "
            f"{'has' if len(single) == 1 else 'have'} a single case. Give a larger "
            "training set, or skip the probe (skinclip evaluate --probe-train '')."
        )
    folds = max(2, min(folds, rarest))
    search = GridSearchCV(
        LogisticRegression(max_iter=2000, class_weight="balanced"),
        {"C": list(c_grid)},
        scoring="balanced_accuracy",
        cv=StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed),
        refit=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(embeds.numpy(), y, groups=list(groups))
    best_c = float(search.best_params_["C"])
    logger.info("Linear probe: C=%g (cv balanced acc %.3f)", best_c, search.best_score_)
    return Probe(search.best_estimator_, num_classes, best_c, float(search.best_score_), folds)
