"""``skinclip evaluate``: one model, one benchmark, one report folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skinclip.data.records import SPLITS
from skinclip.eval.calibration import Temperature
from skinclip.eval.inputs import read_benchmark
from skinclip.eval.report import build_report, write_report
from skinclip.eval.splits import LabelledSplit, from_benchmark, from_shards
from skinclip.labels import LabelSet
from skinclip.model.towers import SkinCLIPBundle

logger = logging.getLogger(__name__)

# Subgroup columns reported by default for atlas shards.
ATLAS_SUBGROUPS = ("modality", "sex", "location")


@dataclass
class EvaluateOptions:
    """What to evaluate and how.

    Attributes:
        benchmark: A shard folder (with ``manifest.json``), a labelled CSV or a folder tree.
        out: Report folder.
        split: Shard split to test on.
        calibration_split: Shard split to fit the temperature on (shards only; "" skips).
        calibration: A labelled CSV or folder to fit the temperature on (file benchmarks).
        temperature: A saved ``temperature.json`` to apply instead of fitting one.
        probe_train: Shard split, CSV or folder to train the linear probe on ("" skips).
        concepts: Score concepts and report AUROC against the atlas annotations.
        subgroups: Metadata columns for per-subgroup metrics.
        image_root: Folder the benchmark's image paths resolve against.
        label_from: ``column`` or ``folder`` (see :func:`skinclip.eval.inputs.read_table`).
        modality: Prompt templates for images with no modality (default: the label set's).
        resamples: Bootstrap resamples.
        workers: Data-loading workers.
        notes: Caveats to print at the top of the report (e.g. a split the model trained on).
    """

    benchmark: Path
    out: Path
    split: str = "test"
    calibration_split: str = "val"
    calibration: Path | None = None
    temperature: Path | None = None
    probe_train: str = ""
    concepts: bool = False
    subgroups: Sequence[str] = field(default_factory=tuple)
    image_root: Path | None = None
    label_from: str = "column"
    modality: str | None = None
    resamples: int = 500
    workers: int = 2
    notes: Sequence[str] = field(default_factory=tuple)


def is_shard_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def _files_split(bundle, source: Path, label_set: LabelSet, opts: EvaluateOptions):
    bench = read_benchmark(source, label_set, opts.image_root, opts.label_from)
    modality = opts.modality or label_set.modality
    return from_benchmark(bundle, bench, modality, num_workers=opts.workers)


def check_options(opts: EvaluateOptions) -> None:
    """Refuse what would fail later, before a model loads or an image is encoded.

    Raises:
        ValueError: On an unknown or empty split name, or overlapping split roles.
        FileNotFoundError: On a missing temperature, calibration or probe-training file.
    """
    if opts.temperature and not Path(opts.temperature).is_file():
        raise FileNotFoundError(
            f"--temperature {opts.temperature}: no such file. Give a temperature.json that "
            "skinclip evaluate wrote, or leave --temperature out to fit one."
        )
    if is_shard_folder(opts.benchmark):
        _check_shard_roles(opts)
        fitted_on = Temperature.load(opts.temperature).split if opts.temperature else None
        if fitted_on == opts.split:
            raise ValueError(
                f"--temperature {opts.temperature} was fitted on the {fitted_on!r} split, the "
                "one under test: its calibrated figures would be fitted to the answers. Test "
                "another split, or fit the temperature on another one."
            )
        return
    for flag, value in (("--calibration", opts.calibration), ("--probe-train", opts.probe_train)):
        if not value:
            continue
        if not Path(value).exists():
            raise FileNotFoundError(
                f"{flag} {value}: no such file or folder. Give a labelled CSV or a <label>/ "
                f"folder tree, or leave {flag} out."
            )
        if Path(value).resolve() == Path(opts.benchmark).resolve():
            raise ValueError(
                f"{opts.benchmark} is the test set; {flag} cannot name it too. Give a separate "
                "labelled file (e.g. a validation or training CSV)."
            )


def _check_shard_roles(opts: EvaluateOptions) -> None:
    """Refuse unknown split names and overlapping split roles, naming the flag to change."""
    roles = (
        ("--split", opts.split),
        ("--calibration-split", "" if opts.temperature else opts.calibration_split),
        ("--probe-train", opts.probe_train),
    )
    if not opts.split:
        raise ValueError(f"--split needs a split name: one of {', '.join(SPLITS)}.")
    for flag, name in roles:
        if name and name not in SPLITS:
            raise ValueError(
                f"{flag} {name!r} is not a split of {opts.benchmark}; choose one of "
                f"{', '.join(SPLITS)}."
            )
    clashes = []
    if opts.calibration_split and opts.calibration_split == opts.split and not opts.temperature:
        clashes.append(f"fit the temperature (--calibration-split {opts.split})")
    if opts.probe_train and opts.probe_train == opts.split:
        clashes.append(f"train the probe (--probe-train {opts.split})")
    if clashes:
        raise ValueError(
            f"The evaluated split {opts.split!r} cannot also {' or '.join(clashes)}. Name "
            "another split for each, or pass --no-calibration and --probe-train '' to skip them."
        )
    if opts.calibration_split == "test" and not opts.temperature:
        raise ValueError(
            "Refusing to fit the temperature on the test split; use --calibration-split val "
            "(or --no-calibration)."
        )


def load_splits(
    bundle: SkinCLIPBundle, label_set: LabelSet, opts: EvaluateOptions
) -> tuple[LabelledSplit, LabelledSplit | None, LabelledSplit | None]:
    """The test split, the calibration split and the probe's training split."""
    check_options(opts)
    if is_shard_folder(opts.benchmark):

        def shard_split(name: str) -> LabelledSplit | None:
            if not name:
                return None
            return from_shards(bundle, opts.benchmark, name, label_set, opts.workers)

        return (
            shard_split(opts.split),
            None if opts.temperature else shard_split(opts.calibration_split),
            shard_split(opts.probe_train),
        )
    test = _files_split(bundle, opts.benchmark, label_set, opts)
    calibration = (
        _files_split(bundle, opts.calibration, label_set, opts)
        if opts.calibration and not opts.temperature
        else None
    )
    train = (
        _files_split(bundle, Path(opts.probe_train), label_set, opts) if opts.probe_train else None
    )
    return test, calibration, train


def evaluate_benchmark(
    bundle: SkinCLIPBundle, label_set: LabelSet, opts: EvaluateOptions
) -> tuple[dict, Temperature | None]:
    """Build and write the report; returns it with the temperature used, if any."""
    test, calibration, train = load_splits(bundle, label_set, opts)
    given = Temperature.load(opts.temperature) if opts.temperature else None
    report, temperature = build_report(
        bundle,
        label_set,
        test,
        calibration=given or calibration,
        train=train,
        concepts=opts.concepts,
        subgroups=opts.subgroups,
        resamples=opts.resamples,
    )
    notes = list(opts.notes)
    if train is None:
        notes.append("No linear probe: no training split was given (--probe-train).")
    if notes:
        report["notes"] = notes
    write_report(report, opts.out)
    if temperature is not None and given is None:
        temperature.save(Path(opts.out) / "temperature.json")
    return report, temperature


def temperature_beside(checkpoint: str | None, label_set: str) -> Path | None:
    """Where a fitted temperature is kept with a local model: beside a weights file, inside an
    exported folder. ``None`` for pretrained tags, which have no local home."""
    if not checkpoint:
        return None
    path = Path(checkpoint.removeprefix("local-dir:"))
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label_set).strip(".") or "labels"
    if path.is_dir():
        return path / f"temperature.{safe}.json"
    if path.is_file():
        return path.with_name(f"{path.name}.temperature.{safe}.json")
    return None
