"""The ``skinclip`` command: one subcommand per step of the pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from skinclip.cli_common import (
    StrictParser,
    configure_logging,
    exit_code,
    port_number,
    positive_int,
)

logger = logging.getLogger("skinclip")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="open_clip model name, or local-dir:PATH for an exported folder "
        "(default: SkinCLIP-EffNetLite0-MiniLM, or the one stored in --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="a SkinCLIP .ckpt, an open_clip weights file, or an open_clip pretrained tag",
    )
    parser.add_argument("--image-size", type=int, default=None, help="override input resolution")
    parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes")


def output_dir(path: str) -> Path:
    """A folder to write into: refused up front when a file is in the way."""
    out = Path(path)
    for part in (out, *out.parents):
        if part.exists() and not part.is_dir():
            raise ValueError(f"Cannot write into {out}: {part} is a file. Choose another --out.")
    return out


def output_file(path: str) -> Path:
    """A file to write: refused up front when it is a folder or sits under a file."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / 'labels.csv'}.")
    output_dir(str(out.parent))
    return out


def _load_bundle(args: argparse.Namespace):
    from skinclip.model.towers import create_skinclip

    if args.checkpoint is None and not str(args.model or "").startswith("local-dir:"):
        # Fine as a baseline, easy to use by mistake: nothing has aligned its two towers.
        logger.warning(
            "No --checkpoint given: using the untrained %s model (for SkinCLIP, ImageNet and "
            "MiniLM towers with random projections), whose scores are near chance. Pass "
            "--checkpoint outputs/quickstart/train/checkpoints/last.ckpt (or your own, or an "
            "open_clip pretrained tag) for a trained one.",
            args.model or "SkinCLIP",
        )
    return create_skinclip(args.model, args.checkpoint, args.image_size)


def cmd_shards(args: argparse.Namespace) -> None:
    from skinclip.data.layouts import read_source
    from skinclip.data.shards import write_shards

    options = {}
    if args.image_root:
        options["image_root"] = Path(args.image_root)
    if args.modality:
        options["default_modality"] = args.modality
    out = output_dir(args.out)
    records = read_source(Path(args.source), kind=args.kind, **options)
    manifest = write_shards(
        records, out, shard_size=args.shard_size, source_name=Path(args.source).name
    )
    print(json.dumps(manifest["counts"], indent=2))
    print(f"Skipped {manifest['skipped_count']} item(s); see {Path(args.out) / 'manifest.json'}")


def cmd_train(args: argparse.Namespace, rest: list[str]) -> None:
    from skinclip.train.cli import run_training

    run_training(["fit", *rest])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from skinclip.eval.run import (
        EvaluateOptions,
        check_options,
        evaluate_benchmark,
        is_shard_folder,
        temperature_beside,
    )
    from skinclip.labels import load_label_set
    from skinclip.model.towers import trained_splits

    if args.resamples < 0:
        raise ValueError(f"--resamples must be 0 (no intervals) or more; got {args.resamples}.")
    if args.no_calibration and args.temperature:
        raise ValueError(
            "--no-calibration and --temperature contradict each other: give --temperature to "
            "apply a saved temperature, or --no-calibration for none."
        )
    shards = is_shard_folder(Path(args.benchmark))
    options = EvaluateOptions(
        benchmark=Path(args.benchmark),
        out=output_dir(args.out),
        split=args.split,
        calibration_split="" if args.no_calibration else args.calibration_split,
        calibration=Path(args.calibration)
        if args.calibration and not args.no_calibration
        else None,
        temperature=Path(args.temperature) if args.temperature else None,
        probe_train=args.probe_train if args.probe_train is not None else ("train" * shards),
        concepts=args.concepts if args.concepts is not None else shards,
        subgroups=args.subgroups if args.subgroups is not None else _default_subgroups(shards),
        image_root=Path(args.image_root) if args.image_root else None,
        label_from=args.label_from,
        modality=args.modality,
        resamples=args.resamples,
        workers=args.workers,
    )
    label_set = load_label_set(args.labels)
    check_options(options)
    trained = trained_splits(args.checkpoint) if shards else ()
    options.notes = _trained_on_notes(args.checkpoint, trained, options)
    for note in options.notes:
        logger.warning("%s", note)
    report, temperature = evaluate_benchmark(_load_bundle(args), label_set, options)
    beside = temperature_beside(args.checkpoint, label_set.name)
    fitted_here = temperature is not None and not args.temperature
    # zeroshot applies a saved temperature by itself; one fitted on seen images must not be.
    if fitted_here and beside is not None and options.calibration_split not in trained:
        temperature.save(beside)
        logger.info("Saved the temperature with the model: %s", beside)
    zs = report["zeroshot"]
    logger.info(
        "%s on %s: zero-shot balanced acc %.3f, accuracy %.3f, ECE %.3f -> %s",
        report["model_id"],
        report["test"]["name"],
        zs["balanced_accuracy"],
        zs["accuracy"],
        zs["ece"],
        Path(args.out) / "report.md",
    )


def _trained_on_notes(checkpoint: str | None, trained: tuple[str, ...], options) -> list[str]:
    """Caveats for a test or calibration split that the checkpoint trained on."""
    notes = []
    if options.split in trained:
        notes.append(
            f"{checkpoint} trained on the '{options.split}' split, so its scores there are not "
            "held out; evaluate on a split it did not train on (--split)."
        )
    if options.calibration_split in trained and not options.temperature:
        notes.append(
            f"{checkpoint} trained on the '{options.calibration_split}' split, so the "
            "temperature fitted there comes out too low (overconfident); it stays in the "
            "report folder and is not saved beside the checkpoint for `skinclip zeroshot`. "
            "--no-calibration skips it."
        )
    return notes


def _default_subgroups(shards: bool) -> tuple[str, ...]:
    from skinclip.eval.run import ATLAS_SUBGROUPS

    return ATLAS_SUBGROUPS if shards else ()


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from skinclip.labeling import label_images, list_images
    from skinclip.labels import load_label_set

    out = output_file(args.out)
    if not 0.0 <= args.abstain_below <= 1.0:
        raise ValueError(f"--abstain-below is a probability, got {args.abstain_below}.")
    label_set = load_label_set(args.labels)
    paths = list_images(Path(args.input), Path(args.image_root) if args.image_root else None)
    if not paths:
        raise ValueError(f"No images found in {args.input}.")
    counts = label_images(
        _load_bundle(args),
        paths,
        label_set,
        out,
        k=args.k,
        modality=args.modality,
        num_workers=args.workers,
        temperature=_zeroshot_temperature(args, label_set.name),
        abstain_below=args.abstain_below,
    )
    labelled = counts["labelled"]
    message = f"Labelled {labelled} image(s), {counts['failed']} unreadable"
    if counts["resumed"]:
        message += f", {counts['resumed']} kept from the interrupted run"
    if args.abstain_below > 0 and labelled:
        coverage = 1 - counts["abstained"] / labelled
        message += (
            f"; abstained on {counts['abstained']} below p={args.abstain_below} "
            f"(coverage {coverage:.1%})"
        )
    print(f"{message} -> {args.out}")


def _zeroshot_temperature(args: argparse.Namespace, label_set: str):
    """The temperature to apply: a given file, none, or (auto) one saved with the model."""
    from skinclip.eval.calibration import Temperature
    from skinclip.eval.run import temperature_beside

    if args.temperature == "none":
        return None
    if args.temperature != "auto":
        return Temperature.load(Path(args.temperature))
    beside = temperature_beside(args.checkpoint, label_set)
    if beside is None or not beside.is_file():
        return None
    logger.info("Applying the temperature saved with the model: %s", beside)
    return Temperature.load(beside)


def cmd_concepts(args: argparse.Namespace) -> None:
    from skinclip.labeling import list_images, write_concept_scores

    out = output_file(args.out)
    paths = list_images(Path(args.input), Path(args.image_root) if args.image_root else None)
    if not paths:
        raise ValueError(f"No images found in {args.input}.")
    counts = write_concept_scores(
        _load_bundle(args), paths, out, modality=args.modality, num_workers=args.workers
    )
    print(f"Scored {counts['scored']} image(s), {counts['failed']} unreadable -> {args.out}")


def cmd_index(args: argparse.Namespace) -> None:
    from skinclip.retrieval import add_to_index, build_case_index, load_case_index

    splits = tuple(dict.fromkeys(args.splits)) if getattr(args, "splits", None) else ()
    if args.action == "build":
        if not 0 < args.target_recall <= 1:
            raise ValueError(f"--target-recall is a fraction in (0, 1]; got {args.target_recall}.")
        out = output_dir(args.out)
        # Refused before encoding, not after: a non-empty folder that is not an index.
        if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
            raise ValueError(
                f"{out} is a non-empty folder without manifest.json, so not an index; choose an "
                "empty or new --out."
            )
        budget = args.memory_budget_mb * 2**20 if args.memory_budget_mb else None
        index = build_case_index(
            _load_bundle(args),
            Path(args.shards),
            splits,  # a split named twice is indexed once
            content=args.content,
            index_type=args.type,
            memory_budget=budget,
            target_recall=args.target_recall,
            num_workers=args.workers,
        )
        index.save(out)
        note = index.spec.note
        print(
            f"Indexed {len(index)} {args.content} of {index.n_cases} case(s) as "
            f"{index.spec.kind}{f' ({note})' if note else ''} -> {args.out}"
        )
        return
    bundle = _load_bundle(args)
    index = load_case_index(Path(args.index), bundle)
    if args.action == "add":
        counts = add_to_index(
            index, bundle, Path(args.shards), splits, replace=args.replace, num_workers=args.workers
        )
        message = f"Added {counts['added']} case(s), replaced {counts['replaced']}"
    else:
        removed = index.remove(args.case_id)
        message = f"Removed {len(set(args.case_id))} case(s) ({removed} item(s))"
    index.save(Path(args.index))
    print(f"{message}; the index now holds {len(index)} item(s) of {index.n_cases} case(s).")


def parse_where(pairs: list[str]) -> dict[str, list[str]]:
    """``field=value`` pairs into a filter; a field given twice matches either value."""
    where: dict[str, list[str]] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise ValueError(f"--where takes FIELD=VALUE, e.g. modality=dermoscopic; got {pair!r}.")
        where.setdefault(field.strip(), []).append(value.strip())
    return where


def cmd_search(args: argparse.Namespace) -> None:
    from skinclip.retrieval import load_case_index, search_image, search_text

    bundle = _load_bundle(args)
    index = load_case_index(Path(args.index), bundle)
    options = {
        "unit": args.unit,
        "where": parse_where(args.where),
        "nprobe": args.nprobe,
        "ef_search": args.ef_search,
    }
    if args.image:
        hits = search_image(index, bundle, Path(args.image), args.k, **options)
    elif args.text:
        hits = search_text(index, bundle, args.text, args.k, **options)
    else:
        hits = index.search_by_case(args.case, args.k, **options)
    if not hits and options["where"]:
        fields = ", ".join(sorted(index.item(0)))
        logger.warning(
            "No item matches --where %s. Items have the fields: %s.", " ".join(args.where), fields
        )
    for hit in hits:
        item = hit.item
        print(
            f"{hit.rank:>2}. {hit.score:.3f}  {hit.case_id}  {item.get('diagnosis')} "
            f"[{item.get('modality')}]  {item.get('caption')}"
        )


def cmd_retrieval_report(args: argparse.Namespace) -> None:
    from skinclip.retrieval_report import retrieval_report, write_retrieval_report

    out = output_dir(args.out)
    report = retrieval_report(_load_bundle(args), Path(args.shards), num_workers=args.workers)
    write_retrieval_report(report, out)
    print(json.dumps(report, indent=2))


def cmd_quickstart(args: argparse.Namespace) -> None:
    from skinclip.quickstart import QuickstartOptions, run_quickstart, summary

    options = QuickstartOptions(
        data=Path(args.data) if args.data else None,
        out=output_dir(args.out),
        max_cases=args.max_cases,
        epochs=args.epochs,
        image_size=args.image_size,
        workers=args.workers,
        config=Path(args.config) if args.config else None,
    )
    metrics = run_quickstart(options)
    print(summary(metrics, options.out))


def build_parser() -> argparse.ArgumentParser:
    parser = StrictParser(prog="skinclip", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("shards", help="read a source and write webdataset shards")
    p.add_argument("source", help="derm7pt folder, MM-Skin CSV/JSON, caption CSV/JSONL or folder")
    p.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    p.add_argument("--kind", default="auto", help="source layout (default: detect)")
    p.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    p.add_argument("--image-root", default=None, help="folder that image paths are relative to")
    p.add_argument("--modality", default=None, choices=["clinical", "dermoscopic", "pathology"])

    sub.add_parser(
        "train",
        help="train with LightningCLI (e.g. --config configs/quickstart.yaml)",
        add_help=False,
    )

    p = sub.add_parser(
        "evaluate",
        help="benchmark report: zero-shot, calibration, linear probe, concepts, subgroups",
    )
    p.add_argument(
        "benchmark",
        help="shard folder (atlas), MM-Skin classification CSV, image,label CSV, "
        "or a <label>/ image folder tree",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--labels", default="atlas4", help="preset name, YAML file, or 'a,b,c'")
    p.add_argument("--split", default="test", help="shard split to test on")
    p.add_argument(
        "--calibration-split", default="val", help="shard split to fit the temperature on"
    )
    p.add_argument("--no-calibration", action="store_true", help="skip temperature scaling")
    p.add_argument("--calibration", default=None, help="labelled CSV/folder to fit it on")
    p.add_argument("--temperature", default=None, help="apply a saved temperature.json")
    p.add_argument(
        "--probe-train",
        default=None,
        help="train split, CSV or folder for the linear probe (default: 'train' for shards; "
        "'' skips)",
    )
    p.add_argument(
        "--concepts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="concept AUROC (default: on for shards)",
    )
    p.add_argument(
        "--subgroups",
        nargs="*",
        default=None,
        help="metadata columns for subgroup metrics (default for shards: modality sex location)",
    )
    p.add_argument("--image-root", default=None, help="folder image paths are relative to")
    p.add_argument("--label-from", default="column", choices=["column", "folder"])
    p.add_argument("--modality", default=None, choices=["clinical", "dermoscopic", "pathology"])
    p.add_argument("--resamples", type=int, default=500, help="bootstrap resamples (0: none)")
    _add_model_args(p)

    p = sub.add_parser("zeroshot", help="label a folder or CSV of images")
    p.add_argument("input", help="image folder (recursive) or CSV with an 'image' column")
    p.add_argument("--labels", default="atlas4", help="preset name, YAML file, or 'a,b,c'")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--k", type=positive_int, default=3, help="labels per image")
    p.add_argument("--modality", default=None, choices=["clinical", "dermoscopic", "pathology"])
    p.add_argument("--image-root", default=None)
    p.add_argument(
        "--temperature",
        default="auto",
        help="temperature.json to calibrate with; 'auto' uses one saved beside --checkpoint "
        "by `skinclip evaluate`, 'none' turns calibration off",
    )
    p.add_argument(
        "--abstain-below",
        type=float,
        default=0.0,
        help="mark images whose top probability is below this as abstained",
    )
    _add_model_args(p)

    p = sub.add_parser("concepts", help="score images for dermoscopic and clinical concepts")
    p.add_argument("input", help="image folder (recursive) or CSV with an 'image' column")
    p.add_argument("--out", required=True, help="output CSV, one column per concept")
    p.add_argument(
        "--modality",
        default=None,
        choices=["clinical", "dermoscopic"],
        help="only the concepts read on this kind of image (default: all)",
    )
    p.add_argument("--image-root", default=None)
    _add_model_args(p)

    p = sub.add_parser("index", help="build, extend or prune a FAISS case index")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="index shard splits")
    b.add_argument("--shards", required=True)
    b.add_argument("--out", required=True, help="index folder")
    b.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val", "test"])
    b.add_argument(
        "--content",
        default="images",
        choices=["images", "captions"],
        help="index image embeddings (image/text -> case) or caption embeddings (image -> caption)",
    )
    b.add_argument(
        "--type",
        default="flat_ip",
        choices=["auto", "flat_ip", "ivf_flat", "ivf_pq", "hnsw"],
        help="FAISS layout; 'auto' picks one from the size, memory budget and recall target",
    )
    b.add_argument("--memory-budget-mb", type=positive_int, default=None)
    b.add_argument("--target-recall", type=float, default=0.95)
    _add_model_args(b)
    a = actions.add_parser("add", help="append the cases of shard splits without a rebuild")
    a.add_argument("--index", required=True)
    a.add_argument("--shards", required=True)
    a.add_argument("--splits", nargs="+", default=["val"], choices=["train", "val", "test"])
    a.add_argument("--replace", action="store_true", help="swap cases that are already indexed")
    _add_model_args(a)
    r = actions.add_parser("remove", help="drop cases by id")
    r.add_argument("--index", required=True)
    r.add_argument("--case-id", nargs="+", required=True)
    _add_model_args(r)

    p = sub.add_parser("search", help="find similar cases for an image, a text or a case")
    p.add_argument("--index", required=True, help="index folder from `skinclip index build`")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image")
    query.add_argument("--text")
    query.add_argument("--case", help="a case id in the index")
    p.add_argument("--k", type=positive_int, default=5)
    p.add_argument("--unit", default="case", choices=["case", "item"])
    p.add_argument(
        "--where",
        nargs="+",
        action="extend",
        default=[],
        help="filters FIELD=VALUE, e.g. modality=dermoscopic; repeatable, and a field given "
        "twice matches either value",
    )
    p.add_argument("--nprobe", type=positive_int, default=None, help="IVF lists to visit")
    p.add_argument("--ef-search", type=positive_int, default=None, help="HNSW beam width")
    _add_model_args(p)

    p = sub.add_parser(
        "retrieval-report", help="retrieval quality on the atlas test split (precision, recall)"
    )
    p.add_argument("shards", help="atlas shard folder")
    p.add_argument("--out", required=True, help="folder for retrieval.json")
    _add_model_args(p)

    p = sub.add_parser("quickstart", help="shards -> training -> evaluation -> index on the atlas")
    p.add_argument("--data", default=None, help="folder holding derm7pt/ (default $SKINCLIP_DATA)")
    p.add_argument(
        "--out", default="outputs/quickstart", help="output folder (default: %(default)s)"
    )
    p.add_argument("--config", default=None, help="training YAML (default: configs/quickstart)")
    p.add_argument(
        "--max-cases",
        type=positive_int,
        default=None,
        help="use only N cases, a fixed sample across diagnoses (a quick trial)",
    )
    p.add_argument(
        "--epochs", type=positive_int, default=None, help="training epochs (default: the config's)"
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="input resolution (default: the config's)",
    )
    p.add_argument("--workers", type=int, default=2, help="data-loader workers (default: 2)")

    p = sub.add_parser("app", help="start the case explorer in the browser (Streamlit)")
    p.add_argument("--config", help="YAML with checkpoint, index, shards, skinvl, max_upload_mb")
    p.add_argument("--checkpoint", help="SkinCLIP checkpoint or exported folder")
    p.add_argument("--index", help="case index folder")
    p.add_argument("--shards", help="shard folder holding the indexed case images")
    p.add_argument("--skinvl", help="SkinVL checkpoint")
    p.add_argument("--max-upload-mb", type=float, help="largest upload (default 20)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default loopback)")
    p.add_argument("--port", type=port_number, default=8501)
    return parser


def cmd_app(args: argparse.Namespace) -> None:
    import math
    import signal
    import subprocess

    import app
    from app.config import parse_config

    app_args = []
    for name in ("config", "checkpoint", "index", "shards", "skinvl", "max_upload_mb"):
        if getattr(args, name) is not None:
            app_args += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    config = parse_config(app_args)  # bad arguments fail here, before a server starts
    script = Path(app.__file__).with_name("explorer.py")
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.maxUploadSize", str(math.ceil(config.max_upload_mb)),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--", *app_args,
    ]  # fmt: skip
    logger.info("Serving the explorer on http://%s:%d (Ctrl-C stops it)", args.host, args.port)
    server = subprocess.Popen(command)

    def stop(signum, frame):
        # A service manager or `kill` stops only this process; the server must go with it
        # rather than keep the port.
        server.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        returncode = server.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group, server included
        returncode = server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if returncode > 0:  # killed by our own SIGTERM or Ctrl-C is a normal stop
        raise SystemExit(returncode)


COMMANDS = {
    "shards": cmd_shards,
    "evaluate": cmd_evaluate,
    "zeroshot": cmd_zeroshot,
    "concepts": cmd_concepts,
    "index": cmd_index,
    "search": cmd_search,
    "retrieval-report": cmd_retrieval_report,
    "quickstart": cmd_quickstart,
    "app": cmd_app,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # LightningCLI parses its own arguments, so `train` hands everything after it over.
    if argv[:1] == ["train"]:
        # Lightning's progress at INFO as well; open_clip's loading chatter stays hidden.
        configure_logging(("skinclip", "index", "lightning"))
        return exit_code(logger, cmd_train, argparse.Namespace(), argv[1:])
    if (
        argv[:1] == ["index"]
        and argv[1:2]
        and argv[1] not in ("build", "add", "remove", "-h", "--help")
    ):
        argv = ["index", "build", *argv[1:]]  # `skinclip index --shards ...` builds
    args = parser.parse_args(argv)
    # The libraries' chatter (faiss also logs each CPU build it probes) only with --verbose.
    configure_logging(("skinclip", "index"), args.verbose)
    return exit_code(logger, COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
