"""``skinvl evaluate``: SkinVL on the atlas test split, beside its two baselines.

Per modality it reports closed-question accuracy (diagnosis among the four groups; present or
absent for each seven-point criterion) and the MM-Skin VQA scores on the open questions. The
same model answering about a blank image shows how much it uses the image; SkinCLIP's
zero-shot classifier answers the diagnosis question as the second baseline.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
import webdataset as wds
from tqdm import tqdm

from skinclip.data.atlas import ATLAS_4CLASS
from skinclip.data.images import decode_image
from skinclip.data.shards import split_urls
from skinclip.train.transforms import eval_transform
from skinvl.metrics import closed_accuracy, closed_balanced_accuracy, vqa_scores
from skinvl.model import SkinVL, generate
from skinvl.qa import qa_pairs

logger = logging.getLogger(__name__)

# The answer set of each kind of closed question (criteria share ``presence``).
CLOSED_CHOICES = {
    "diagnosis_group": ATLAS_4CLASS,
    "presence": ("yes", "no"),
    "modality": ("clinical", "dermoscopic"),
    "elevation": ("flat", "palpable", "nodular"),
}


def _questions(shards: Path, split: str, image_size: int) -> Iterator[tuple]:
    """(image, modality, QAPair, sample key) for every canonical question about every image."""
    transform = eval_transform(image_size)
    for sample in wds.WebDataset(split_urls(shards, split), shardshuffle=False, empty_check=False):
        if "json" not in sample or "jpg" not in sample:
            raise ValueError(
                f"Sample {sample.get('__key__')!r} in {sample.get('__url__')} lacks its image or "
                "metadata; the shard is damaged. Write the shards again with `skinclip shards`."
            )
        meta = json.loads(sample["json"])
        modality = meta.get("modality") or "dermoscopic"
        image = transform(decode_image(sample["jpg"]))
        for pair in qa_pairs(meta, modality):
            yield image, modality, pair, sample["__key__"]


def _answer(model: SkinVL, items: list[tuple], blank: bool, max_new_tokens: int, batch: int):
    """Answers in the order of ``items``.

    Questions are batched by kind: generation stops when every answer in a batch has ended,
    so a batch of yes/no questions is not held up by one "Describe this lesion." answer.
    """
    order = sorted(range(len(items)), key=lambda i: items[i][2].kind)
    answers: list[str] = [""] * len(items)
    desc = "blank-image baseline" if blank else "SkinVL"
    for start in tqdm(range(0, len(order), batch), desc=desc, unit="batch"):
        chunk = order[start : start + batch]
        images = torch.stack([items[i][0] for i in chunk])
        if blank:
            images = torch.zeros_like(images)  # the normalised mean colour: no lesion at all
        questions = [items[i][2].question for i in chunk]
        for i, answer in zip(
            chunk, generate(model, images, questions, max_new_tokens=max_new_tokens), strict=True
        ):
            answers[i] = answer
    return answers


def _closed_key(kind: str) -> str | None:
    """The :data:`CLOSED_CHOICES` key of a question kind (``presence:streaks`` -> presence)."""
    key = kind.partition(":")[0]
    return key if key in CLOSED_CHOICES else None


def score_answers(items: list[tuple], answers: list[str]) -> dict:
    """Per modality: closed accuracy by question kind and overall, and open VQA scores.

    ``closed_lesion`` leaves out the modality question: a blank image cannot show whether a
    photograph is clinical or dermoscopic, so that question alone would separate the two
    models. ``diagnosis_group_balanced`` is the diagnosis accuracy averaged over the four
    groups, comparable with SkinCLIP's zero-shot balanced accuracy.
    """
    result: dict = {}
    for modality in sorted({item[1] for item in items}):
        rows = [(item[2], a) for item, a in zip(items, answers, strict=True) if item[1] == modality]
        closed: dict[str, float] = {}
        counts: dict[str, int] = {}
        balanced = None
        for kind in sorted({p.kind for p, _ in rows if _closed_key(p.kind)}):
            chosen = [(p, a) for p, a in rows if p.kind == kind]
            choices = CLOSED_CHOICES[_closed_key(kind)]
            predicted, wanted = [a for _, a in chosen], [p.answer for p, _ in chosen]
            closed[kind] = closed_accuracy(predicted, wanted, choices)
            counts[kind] = len(chosen)
            if kind == "diagnosis_group":
                balanced = closed_balanced_accuracy(predicted, wanted, choices)
        open_rows = [(p, a) for p, a in rows if not p.closed]
        result[modality] = {
            "closed": closed,
            "closed_overall": _mean(closed, counts, closed),
            "closed_lesion": _mean(closed, counts, [k for k in closed if k != "modality"]),
            "diagnosis_group_balanced": balanced,
            "closed_questions": sum(counts.values()),
            "open": vqa_scores([a for _, a in open_rows], [p.answer for p, _ in open_rows])
            if open_rows
            else None,
            "open_questions": len(open_rows),
        }
    return result


def _mean(accuracy: dict[str, float], counts: dict[str, int], kinds) -> float | None:
    """Accuracy over the questions of ``kinds`` (each kind weighted by its count)."""
    total = sum(counts[k] for k in kinds)
    return sum(accuracy[k] * counts[k] for k in kinds) / total if total else None


def skinclip_baseline(checkpoint: str, shards: Path, split: str) -> dict:
    """SkinCLIP zero-shot on the diagnosis question: accuracy and balanced accuracy."""
    from skinclip.evaluate import evaluate_split
    from skinclip.model.towers import create_skinclip

    metrics = evaluate_split(create_skinclip(pretrained=checkpoint), shards, split)
    return {
        "checkpoint": checkpoint,
        "accuracy": metrics["zeroshot_acc"],
        "balanced_accuracy": metrics["zeroshot_balanced_acc"],
        "images": metrics["zeroshot_images"],
    }


def evaluate_atlas(
    model: SkinVL,
    image_size: int,
    shards: Path,
    split: str = "test",
    max_new_tokens: int = 64,
    batch_size: int = 32,
    limit: int | None = None,
) -> tuple[dict, list[dict]]:
    """The report (SkinVL and SkinVL with a blank image) and every answer; the SkinCLIP
    baseline is :func:`skinclip_baseline`.

    Args:
        limit: Score only the first ``limit`` questions (a quick look, not for the README).

    Returns:
        The report, and one record per question: image key, modality, kind, question,
        reference answer, SkinVL's answer and the blank-image answer.
    """
    if split != "test":
        logger.warning("Evaluating on split %r, not the test split", split)
    items = list(itertools.islice(_questions(shards, split, image_size), limit))
    if not items:
        raise ValueError(f"No questions could be built from split {split!r} of {shards}.")
    model.eval()
    report: dict = {"split": split, "questions": len(items)}
    answers = {}
    for name, blank in (("skinvl", False), ("blank_image", True)):
        answers[name] = _answer(model, items, blank, max_new_tokens, batch_size)
        report[name] = score_answers(items, answers[name])
    records = [
        {
            "key": key,
            "modality": modality,
            "kind": pair.kind,
            "question": pair.question,
            "reference": pair.answer,
            "skinvl": ours,
            "blank_image": blank,
        }
        for (_, modality, pair, key), ours, blank in zip(
            items, answers["skinvl"], answers["blank_image"], strict=True
        )
    ]
    return report, records
