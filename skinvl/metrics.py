"""Answer metrics: MM-Skin's VQA scores and closed-question accuracy.

BLEU-1 to BLEU-4 and ROUGE-L come from torchmetrics; METEOR is reported only when ``nltk``
and its WordNet data are installed, since it cannot be computed offline otherwise. Token
recall is the share of the reference's tokens that the answer contains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from torchmetrics.text import BLEUScore
from torchmetrics.text.rouge import ROUGEScore

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; punctuation is dropped."""
    return _TOKEN.findall(text.lower())


def token_recall(prediction: str, reference: str) -> float:
    """Share of the reference's distinct tokens that appear in the prediction."""
    wanted = set(tokens(reference))
    return len(wanted & set(tokens(prediction))) / len(wanted) if wanted else 0.0


def _meteor(predictions: Sequence[str], references: Sequence[str]) -> float | None:
    try:
        from nltk.translate.meteor_score import meteor_score

        scores = [
            meteor_score([tokens(r)], tokens(p))
            for p, r in zip(predictions, references, strict=True)
        ]
    except (ImportError, LookupError):
        return None  # nltk or its WordNet data missing: no offline METEOR
    return sum(scores) / len(scores)


def vqa_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """BLEU-1..4, ROUGE-L (F), METEOR (or None) and token recall, averaged over answers.

    Raises:
        ValueError: If the two lists differ in length or are empty.
    """
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"Need as many predictions as references (got {len(predictions)} and "
            f"{len(references)}), and at least one."
        )
    preds = [" ".join(tokens(p)) for p in predictions]
    refs = [" ".join(tokens(r)) for r in references]
    result: dict[str, float | None] = {}
    for n in range(1, 5):
        # Corpus-level BLEU with uniform weights up to n, as MM-Skin reports it.
        result[f"bleu{n}"] = float(BLEUScore(n_gram=n)(preds, [[r] for r in refs]))
    rouge = ROUGEScore(rouge_keys=("rougeL",))(preds, refs)
    result["rougeL"] = float(rouge["rougeL_fmeasure"])
    result["meteor"] = _meteor(predictions, references)
    result["token_recall"] = sum(map(token_recall, predictions, references)) / len(references)
    return result


def closed_answer(prediction: str, choices: Sequence[str]) -> str | None:
    """The choice a free-text answer names first (whole words), or None if it names none."""
    text = " " + " ".join(tokens(prediction)) + " "
    found = [(text.find(f" {' '.join(tokens(c))} "), c) for c in choices]
    found = [(at, c) for at, c in found if at >= 0]
    return min(found)[1] if found else None


def closed_accuracy(
    predictions: Sequence[str], answers: Sequence[str], choices: Sequence[str]
) -> float:
    """Share of answers whose named choice equals the reference; naming none is wrong."""
    if not answers:
        raise ValueError("No closed questions to score.")
    hits = [closed_answer(p, choices) == a for p, a in zip(predictions, answers, strict=True)]
    return sum(hits) / len(hits)


def closed_balanced_accuracy(
    predictions: Sequence[str], answers: Sequence[str], choices: Sequence[str]
) -> float:
    """Mean over the reference classes of the share answered right: a model that always
    names the commonest class scores 1 / (number of classes), not that class's share."""
    if not answers:
        raise ValueError("No closed questions to score.")
    recalls = []
    for cls in sorted(set(answers)):
        rows = [p for p, a in zip(predictions, answers, strict=True) if a == cls]
        recalls.append(closed_accuracy(rows, [cls] * len(rows), choices))
    return sum(recalls) / len(recalls)
