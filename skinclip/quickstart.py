"""``skinclip quickstart``: the whole chain on the derm7pt atlas, into one output folder.

Steps: shards -> training -> test-split evaluation (trained and untrained) -> case index ->
example retrievals. Rerunning after a kill resumes training from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from skinclip.data.atlas import read_atlas
from skinclip.data.shards import write_json_atomic, write_shards
from skinclip.data.splits import split_fraction

logger = logging.getLogger(__name__)

DATA_HELP = (
    "SkinCLIP quickstart needs the derm7pt atlas (Kawahara et al., IEEE JBHI 2019; images from "
    "the Interactive Atlas of Dermoscopy). Request it from http://derm.cs.sfu.ca (academic "
    "use only), unpack it so that DATA/derm7pt/meta/meta.csv exists, then pass "
    "--data DATA or set SKINCLIP_DATA=DATA."
)


@dataclass
class QuickstartOptions:
    """What to run; ``None`` fields take the defaults of ``configs/quickstart.yaml``."""

    data: Path | None = None
    out: Path = Path("outputs/quickstart")
    max_cases: int | None = None
    epochs: int | None = None
    image_size: int | None = None
    workers: int = 2
    config: Path | None = None


def find_atlas(data: Path | None) -> Path:
    """Locate the derm7pt folder from ``--data`` or ``SKINCLIP_DATA``.

    Accepts the folder that holds ``derm7pt/`` or the ``derm7pt`` folder itself.

    Raises:
        FileNotFoundError: With download instructions when nothing is found.
    """
    if data is None:
        env = os.environ.get("SKINCLIP_DATA")
        if not env:
            raise FileNotFoundError(f"No data given and SKINCLIP_DATA is not set. {DATA_HELP}")
        data = Path(env)
    for candidate in (Path(data) / "derm7pt", Path(data)):
        if (candidate / "meta" / "meta.csv").is_file():
            return candidate
    raise FileNotFoundError(
        f"No derm7pt atlas under {data} (looked for meta/meta.csv). {DATA_HELP}"
    )


def default_config(name: str = "quickstart.yaml") -> Path:
    """A YAML under ``configs/`` of the source checkout this package runs from."""
    path = Path(__file__).resolve().parents[1] / "configs" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"Default training config {path} not found (installed without the source tree?). "
            "Pass --config PATH to a training YAML such as the repository's "
            "configs/quickstart.yaml."
        )
    return path


def training_configs(config: Path | None) -> list[Path]:
    """The YAMLs quickstart trains with, later ones overriding earlier ones.

    By default the recipe chosen on validation (``quickstart.yaml``) and its final fit on train
    and validation cases (``final_fit.yaml``); a user's ``--config`` replaces both.
    """
    if config is not None:
        return [config]
    return [default_config(), default_config("final_fit.yaml")]


def _sample_cases(records, max_cases: int | None):
    """All records, or those of ``max_cases`` cases picked by hash of the case id.

    The atlas lists cases by diagnosis, so its first N cases would hold one or two diagnoses;
    a hash order is a fixed pseudo-random sample that spans them.
    """
    if max_cases is None:
        yield from records
        return
    records = list(records)
    ids = {record.meta["case_id"] for record in records}
    keep = set(sorted(ids, key=split_fraction)[:max_cases])
    yield from (record for record in records if record.meta["case_id"] in keep)


def _check_splits(manifest: dict, options: QuickstartOptions) -> None:
    counts = manifest["counts"]["split"]
    empty = [split for split in ("train", "val", "test") if not counts.get(split)]
    if empty:
        raise ValueError(
            f"The shards have no {' or '.join(empty)} images (--max-cases {options.max_cases}). "
            "Use at least 20 cases so that every official split gets some."
        )


def _check_same_run(train_dir: Path, settings: dict, record_it: bool = True) -> None:
    """Refuse to resume a checkpoint that was trained with other settings or other shards.

    With ``record_it`` False only the settings given are compared and nothing is written: the
    check quickstart makes before it rewrites the shards of a run it may then refuse.
    """
    from skinclip.train.cli import last_checkpoint

    record = train_dir / "quickstart_run.json"
    if last_checkpoint(train_dir) and record.is_file():
        previous = json.loads(record.read_text())
        keys = settings.keys() | (previous.keys() if record_it else set())
        changed = sorted(k for k in keys if settings.get(k) != previous.get(k))
        if changed:
            raise ValueError(
                f"{train_dir} holds a run with other settings ({', '.join(changed)}); resuming "
                "it would report a model trained on something else. Pass another --out, or "
                f"delete {train_dir} to start over."
            )
    if record_it:
        train_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, settings)


def _refuse_training_on_test(configs: list[Path], parsed: list[dict]) -> None:
    """Quickstart reports test metrics as held out: no config may train on the test split."""
    splits: list[str] = ["train"]
    for config in parsed:
        if not isinstance(config, dict):
            continue
        data = config.get("data")
        found = data.get("train_splits") if isinstance(data, dict) else None
        # jsonargparse also reads dotted keys. A data section kept in another file is only
        # known once trained: run_quickstart checks the checkpoint then.
        found = config.get("data.train_splits", found)
        if isinstance(found, list | tuple):
            splits = list(found)
    if "test" in splits:
        raise ValueError(
            f"{' + '.join(map(str, configs))} train(s) on the test split (data.train_splits: "
            f"{splits}), but quickstart reports test metrics as held out. Remove 'test' from "
            "data.train_splits, or train with `skinclip train` instead."
        )


def _run_settings(options: QuickstartOptions) -> dict:
    """What makes two quickstart runs the same run, the shards aside; refuses test training."""
    configs = training_configs(options.config)
    parsed = [yaml.safe_load(config.read_text()) or {} for config in configs]
    _refuse_training_on_test(configs, parsed)
    return {
        # Parsed, so that an edited comment does not count as another run.
        "config": parsed,
        "epochs": options.epochs,
        "image_size": options.image_size,
        "max_cases": options.max_cases,
    }


def _train(options: QuickstartOptions, shards: Path, train_dir: Path, settings: dict) -> Path:
    """Train (or resume) into ``train_dir``; ``settings`` are the run's, shard counts included."""
    from skinclip.train.cli import last_checkpoint, run_training

    configs = training_configs(options.config)
    _check_same_run(train_dir, settings)

    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    args += [
        "--data.shards",
        str(shards),
        "--data.num_workers",
        str(options.workers),
        "--trainer.default_root_dir",
        str(train_dir),
        # Several GPUs would start DDP, whose extra processes rerun this whole command
        # (shards, evaluation and all); `skinclip train` is the multi-device path.
        "--trainer.devices",
        "1",
    ]
    if options.epochs is not None:
        args += ["--trainer.max_epochs", str(options.epochs)]
        args += ["--trainer.check_val_every_n_epoch", str(options.epochs)]
    if options.image_size is not None:
        args += ["--model.image_size", str(options.image_size)]
        args += ["--data.train_image_size", str(options.image_size)]
    resume = last_checkpoint(train_dir)
    if resume:
        logger.info("Resuming training from %s", resume)
        args += ["--ckpt_path", str(resume)]
    run_training(args)
    final = last_checkpoint(train_dir)
    if final is None:
        raise RuntimeError(f"Training ended without writing {train_dir / 'checkpoints'}.")
    return final


def _examples(index, encoded, k: int = 3, n: int = 3) -> list[dict]:
    examples = []
    for row in range(min(n, len(encoded.metas))):
        hits = index.search(encoded.image_embeds[row].numpy(), k=k)[0]
        meta = encoded.metas[row]
        examples.append(
            {
                "query": meta["key"],
                "query_diagnosis": meta.get("diagnosis"),
                "hits": [
                    {
                        "case_id": h.case_id,
                        "score": round(h.score, 4),
                        "diagnosis": h.item.get("diagnosis"),
                        "modality": h.item.get("modality"),
                        "caption": h.item.get("caption"),
                    }
                    for h in hits
                ],
            }
        )
    return examples


def run_quickstart(options: QuickstartOptions) -> dict:
    """Run every step and write ``<out>/metrics.json``.

    Returns:
        The metrics written.
    """
    from skinclip.encode import encode_split
    from skinclip.evaluate import evaluate_split, split_metrics
    from skinclip.model.towers import create_skinclip, image_size_of, trained_splits
    from skinclip.retrieval import build_case_index

    atlas = find_atlas(options.data)
    if options.max_cases is not None:
        logger.warning(
            "--max-cases %d: a trial of the pipeline on a few cases. Its metrics come from a "
            "handful of test images and say nothing about the model; leave the option out for "
            "the real run.",
            options.max_cases,
        )
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    # Before the shards are rewritten: a refused rerun must leave the earlier run as it was.
    settings = _run_settings(options)
    _check_same_run(out / "train", settings, record_it=False)
    start = time.perf_counter()
    records = _sample_cases(read_atlas(atlas), options.max_cases)
    shards = out / "shards"
    manifest = write_shards(records, shards, shard_size=128, source_name="derm7pt")
    _check_splits(manifest, options)
    timings["shards_s"] = time.perf_counter() - start

    start = time.perf_counter()
    settings["shard_counts"] = manifest["counts"]
    checkpoint = _train(options, shards, out / "train", settings)
    timings["train_s"] = time.perf_counter() - start
    if "test" in trained_splits(str(checkpoint)):
        raise ValueError(
            f"{checkpoint} trained on the test split, so quickstart cannot report test metrics "
            "as held out. Remove 'test' from data.train_splits in the training config."
        )

    start = time.perf_counter()
    trained = create_skinclip(pretrained=str(checkpoint))
    untrained = create_skinclip(image_size=image_size_of(trained.model))
    results = {"untrained": evaluate_split(untrained, shards, "test", options.workers)}
    encoded = encode_split(trained, shards, "test", num_workers=options.workers)
    results["trained"] = split_metrics(trained, encoded, "test")
    timings["evaluate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    # Every case outside the test split: the cases the default model trained on.
    index = build_case_index(trained, shards, ("train", "val"), num_workers=options.workers)
    index.save(out / "index")
    timings["index_s"] = time.perf_counter() - start

    metrics = {
        "data": str(atlas),
        "checkpoint": str(checkpoint),
        "shards": {"counts": manifest["counts"], "skipped": manifest["skipped_count"]},
        "test": results,
        "examples": _examples(index, encoded),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "max_cases": options.max_cases,
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def summary(metrics: dict, out: Path) -> str:
    """What quickstart prints at the end: the test-split figures of both models, the example
    retrievals, and where everything was saved."""
    lines = [f"Test split ({metrics['test']['trained']['images']} images):"]
    lines.append(f"  {'model':<10} {'zero-shot bal. acc':>18} {'text->image R@10':>16}")
    for name in ("untrained", "trained"):
        row = metrics["test"][name]
        lines.append(
            f"  {name:<10} {row['zeroshot_balanced_acc']:>18.3f} {row['text_to_image_R@10']:>16.3f}"
        )
    for example in metrics["examples"]:
        lines.append(f"Query {example['query']} ({example['query_diagnosis']}):")
        lines += [
            f"  {hit['score']:.3f} {hit['case_id']} {hit['diagnosis']} [{hit['modality']}]"
            for hit in example["hits"]
        ]
    if metrics.get("max_cases") is not None:
        lines.append(f"A trial on {metrics['max_cases']} cases: these figures mean nothing.")
    lines.append(
        f"All metrics: {out / 'metrics.json'}; checkpoint (--checkpoint): {metrics['checkpoint']}"
        f"; open_clip export: {out / 'train' / 'export'}; case index: {out / 'index'}."
    )
    return "\n".join(lines)
