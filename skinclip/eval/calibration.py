"""Temperature scaling: one scalar that makes zero-shot probabilities mean what they say.

A CLIP model's logit scale is learnt for contrastive training, not for calibrated class
probabilities. Dividing the logits by a temperature fitted on a labelled calibration split
keeps every prediction (the argmax does not move) and fixes over- or under-confidence.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from skinclip.data.shards import write_json_atomic
from skinclip.labels import LabelSet

logger = logging.getLogger(__name__)

# Fitted temperatures are kept within this range.
T_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class Temperature:
    """A fitted temperature and what it was fitted for.

    Attributes:
        temperature: Logits are divided by this (>1 softens, <1 sharpens).
        model_id: The model whose zero-shot logits it was fitted on.
        label_set: The label set (classes and prompts) it was fitted with.
        split: The calibration split's name; never the test split.
        n: Images it was fitted on.
        nll_before: Mean negative log-likelihood on the calibration split at temperature 1.
        nll_after: The same at the fitted temperature.
        model_checksum: Fingerprint of the model's weights (see ``model_checksum``).
        classes_fingerprint: Fingerprint of the label set's classes and wording.
    """

    temperature: float
    model_id: str
    label_set: str
    split: str
    n: int
    nll_before: float
    nll_after: float
    model_checksum: str = ""
    classes_fingerprint: str = ""

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature must be a positive finite number; got {t!r}.")

    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        return rescale(probs, self.temperature)

    def save(self, path: Path) -> None:
        write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: Path) -> Temperature:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Calibration file not found: {path}. Fit one with 'skinclip evaluate "
                "--calibration-split val' (it is saved as temperature.json)."
            )
        try:
            return cls(**json.loads(path.read_text("utf-8")))
        except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a SkinCLIP calibration file: {err}") from None

    def check(self, model_checksum: str, label_set: LabelSet) -> None:
        """Refuse a temperature fitted for other weights or other classes and wording."""
        if (self.model_checksum, self.classes_fingerprint) != (
            model_checksum,
            label_set.fingerprint(),
        ):
            raise ValueError(
                f"The calibration was fitted for model {self.model_id!r} (weights "
                f"{self.model_checksum or 'unknown'}) with label set {self.label_set!r}; the "
                f"model in use (weights {model_checksum}) or the classes of label set "
                f"{label_set.name!r} differ. Fit it again with `skinclip evaluate`."
            )


def rescale(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities with their logits divided by ``temperature``.

    ``log(probs)`` equals the logits up to a per-row constant, which softmax ignores, so the
    probabilities are all that is needed.
    """
    # float64, so that even a large temperature leaves the probabilities in their order.
    logits = torch.log(probs.double().clamp_min(1e-300)) / temperature
    return F.softmax(logits, dim=1).to(probs.dtype)


def _nll(log_probs: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(log_probs / temperature, targets)


def fit_temperature(
    probs: torch.Tensor,
    targets: torch.Tensor,
    model_id: str,
    label_set: LabelSet,
    split: str,
    model_checksum: str = "",
) -> Temperature:
    """Fit the temperature that minimises the negative log-likelihood of ``targets``.

    Raises:
        ValueError: On an empty calibration set or one named ``test``.
    """
    if split == "test":
        raise ValueError("Refusing to fit the calibration on the test split; use val.")
    if len(targets) == 0:
        raise ValueError(f"The calibration split {split!r} has no labelled images.")
    log_probs = torch.log(probs.double().clamp_min(1e-12))
    # Optimise log T so the temperature stays positive.
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = _nll(log_probs, targets, log_t.exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    # A model no better than chance is best "calibrated" by an infinite temperature (uniform
    # probabilities); the clamp keeps the probabilities distinct, so the ranking survives.
    temperature = min(max(float(log_t.detach().exp()), T_RANGE[0]), T_RANGE[1])
    one = torch.ones(1, dtype=torch.float64)
    fitted = Temperature(
        temperature=temperature,
        model_id=model_id,
        label_set=label_set.name,
        split=split,
        n=len(targets),
        nll_before=float(_nll(log_probs, targets, one)),
        nll_after=float(_nll(log_probs, targets, one * temperature)),
        model_checksum=model_checksum,
        classes_fingerprint=label_set.fingerprint(),
    )
    logger.info("Fitted temperature %.3f on %d %s images", temperature, len(targets), split)
    return fitted
