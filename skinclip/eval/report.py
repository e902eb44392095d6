"""Benchmark reports: zero-shot (before and after temperature scaling), linear probe and
concept AUROC for one model on one labelled test set, written as JSON, Markdown and PNGs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from skinclip.data.shards import write_json_atomic
from skinclip.eval import classification
from skinclip.eval.calibration import Temperature, fit_temperature
from skinclip.eval.concepts import concept_auroc, concept_scores
from skinclip.eval.markdown import render_markdown
from skinclip.eval.plots import plot_confusion, plot_reliability
from skinclip.eval.probe import fit_probe
from skinclip.eval.splits import LabelledSplit
from skinclip.labels import LabelSet
from skinclip.model.towers import SkinCLIPBundle, model_checksum
from skinclip.zeroshot import classify_by_modality

logger = logging.getLogger(__name__)

# Probability thresholds at which the report shows coverage against accuracy.
ABSTAIN_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def zeroshot_probs(bundle: SkinCLIPBundle, split: LabelledSplit, label_set: LabelSet):
    """(N, C) zero-shot probabilities with each image's own modality templates."""
    modalities = [m or label_set.modality for m in split.modalities]
    return classify_by_modality(bundle.model, bundle.tokenizer, split.embeds, modalities, label_set)


def selective_accuracy(
    probs: torch.Tensor, targets: torch.Tensor, thresholds: Sequence[float] = ABSTAIN_THRESHOLDS
) -> list[dict]:
    """Coverage and accuracy on the images whose top probability reaches each threshold."""
    confidence, predicted = probs.max(dim=1)
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold
        n = int(kept.sum())
        accuracy = float((predicted[kept] == targets[kept]).float().mean()) if n else None
        rows.append({"threshold": threshold, "coverage": n / len(targets), "accuracy": accuracy})
    return rows


def method_scores(
    probs: torch.Tensor,
    split: LabelledSplit,
    subgroups: Sequence[str],
    resamples: int,
) -> dict:
    """Every report metric for one method's probabilities on the test split."""
    result = classification.score(probs, split.targets, resamples=resamples)
    result["reliability"] = classification.reliability(probs, split.targets)
    result["selective"] = selective_accuracy(probs, split.targets)
    if subgroups:
        result["subgroups"] = classification.subgroup_scores(
            probs, split.targets, split.metas, subgroups
        )
    return result


def build_report(
    bundle: SkinCLIPBundle,
    label_set: LabelSet,
    test: LabelledSplit,
    calibration: LabelledSplit | Temperature | None = None,
    train: LabelledSplit | None = None,
    concepts: bool = False,
    subgroups: Sequence[str] = (),
    resamples: int = 500,
) -> tuple[dict, Temperature | None]:
    """Evaluate one model on a test split.

    Args:
        bundle: The model.
        label_set: Classes of the benchmark.
        test: The labelled test split; only ever predicted.
        calibration: A labelled split to fit the temperature on, or a fitted temperature.
        train: A labelled training split for the linear probe (skipped when None).
        concepts: Score concepts and report their AUROC against the test annotations.
        subgroups: Metadata columns to break the metrics down by.
        resamples: Bootstrap resamples for the 95% intervals.

    Returns:
        The report dict and the temperature used (fitted or given), if any.
    """
    report: dict = {
        "model_id": bundle.model_id,
        "label_set": label_set.name,
        "classes": label_set.names,
        "test": test.summary,
    }
    probs = zeroshot_probs(bundle, test, label_set)
    report["zeroshot"] = method_scores(probs, test, subgroups, resamples)

    temperature = _temperature(bundle, label_set, calibration)
    if temperature is not None:
        temperature.check(model_checksum(bundle), label_set)
        calibrated = temperature.apply(probs)
        report["calibration"] = asdict(temperature)
        report["zeroshot_calibrated"] = method_scores(calibrated, test, subgroups, resamples)
        report["calibration"]["test_nll_before"] = _nll(probs, test.targets)
        report["calibration"]["test_nll_after"] = _nll(calibrated, test.targets)

    if train is not None:
        probe = fit_probe(
            train.embeds, train.targets, train.groups, len(label_set), class_names=label_set.names
        )
        report["probe"] = {
            **probe.summary(),
            "train": train.summary,
            **method_scores(probe.predict_proba(test.embeds), test, subgroups, resamples),
        }

    if concepts:
        embeds, metas = test.concept_pool()
        scores = concept_scores(bundle.model, bundle.tokenizer, embeds)
        report["concepts"] = concept_auroc(scores, metas)
        seven = [v["auroc"] for v in report["concepts"].values() if v["seven_point"] and v["auroc"]]
        report["concepts_seven_point_mean_auroc"] = sum(seven) / len(seven) if seven else None
    return report, temperature


def _temperature(bundle, label_set, calibration) -> Temperature | None:
    if calibration is None or isinstance(calibration, Temperature):
        return calibration
    probs = zeroshot_probs(bundle, calibration, label_set)
    return fit_temperature(
        probs,
        calibration.targets,
        bundle.model_id,
        label_set,
        calibration.name,
        model_checksum(bundle),
    )


def _nll(probs: torch.Tensor, targets: torch.Tensor) -> float:
    return float(torch.nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), targets))


def _json_safe(value):
    """NaN (an undefined metric, e.g. AUROC of a one-class subgroup) becomes null: strict JSON
    readers reject NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_report(report: dict, out: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out``.

    Returns:
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # A reused folder must not keep figures of methods this report does not have.
    for stale in (*out.glob("confusion_*.png"), out / "reliability.png", out / "temperature.json"):
        stale.unlink(missing_ok=True)
    report = _json_safe(report)
    names = report["classes"]
    written = []
    for method in ("zeroshot", "zeroshot_calibrated", "probe"):
        if method in report:
            path = out / f"confusion_{method}.png"
            title = f"{method} - {report['label_set']} ({report['model_id']})"
            plot_confusion(report[method]["confusion_matrix"], names, title, path)
            written.append(path)
    curves = {
        label: report[method]["reliability"]
        for method, label in (
            ("zeroshot", "zero-shot"),
            ("zeroshot_calibrated", "zero-shot, temperature-scaled"),
            ("probe", "linear probe"),
        )
        if method in report
    }
    path = out / "reliability.png"
    plot_reliability(curves, f"Reliability - {report['label_set']}", path)
    written.append(path)
    write_json_atomic(out / "report.json", report)
    md = out / "report.md"
    tmp = md.with_name(md.name + ".tmp")
    tmp.write_text(render_markdown(report), encoding="utf-8")
    tmp.replace(md)
    written += [out / "report.json", md]
    logger.info("Report written to %s", out)
    return written
