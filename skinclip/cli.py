"""The ``skinclip`` command: one subcommand per step of the pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


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
    from skinclip.evaluate import evaluate_split

    metrics = evaluate_split(_load_bundle(args), Path(args.shards), args.split, args.workers)
    print(json.dumps(metrics, indent=2))


def cmd_zeroshot(args: argparse.Namespace) -> None:
    from skinclip.labeling import label_images, list_images, parse_labels

    out = output_file(args.out)
    classes = parse_labels(args.labels)
    paths = list_images(Path(args.input), Path(args.image_root) if args.image_root else None)
    if not paths:
        raise ValueError(f"No images found in {args.input}.")
    counts = label_images(
        _load_bundle(args),
        paths,
        classes,
        out,
        k=args.k,
        modality=args.modality,
        num_workers=args.workers,
    )
    print(f"Labelled {counts['labelled']} image(s), {counts['failed']} unreadable -> {args.out}")


def cmd_index(args: argparse.Namespace) -> None:
    from skinclip.retrieval import build_case_index

    index = build_case_index(
        _load_bundle(args),
        Path(args.shards),
        tuple(dict.fromkeys(args.splits)),  # a split named twice is indexed once
        num_workers=args.workers,
    )
    index.save(Path(args.out))
    print(f"Indexed {len(index)} image(s) of {index.n_cases} case(s) -> {args.out}")


def cmd_search(args: argparse.Namespace) -> None:
    from skinclip.retrieval import load_case_index, search_image, search_text

    bundle = _load_bundle(args)
    index = load_case_index(Path(args.index), bundle)
    if args.image:
        hits = search_image(index, bundle, Path(args.image), args.k)
    else:
        hits = search_text(index, bundle, args.text, args.k)
    for hit in hits:
        item = hit.item
        print(
            f"{hit.rank:>2}. {hit.score:.3f}  {hit.case_id}  {item.get('diagnosis')} "
            f"[{item.get('modality')}]  {item.get('caption')}"
        )


def cmd_quickstart(args: argparse.Namespace) -> None:
    from skinclip.quickstart import QuickstartOptions, run_quickstart

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
    print(json.dumps(metrics, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skinclip", description=__doc__)
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

    p = sub.add_parser("evaluate", help="zero-shot and retrieval metrics on a shard split")
    p.add_argument("--shards", required=True)
    p.add_argument("--split", default="test")
    _add_model_args(p)

    p = sub.add_parser("zeroshot", help="label a folder or CSV of images")
    p.add_argument("input", help="image folder (recursive) or CSV with an 'image' column")
    p.add_argument("--labels", default="atlas4", help="preset name, YAML file, or 'a,b,c'")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--k", type=positive_int, default=3, help="labels per image")
    p.add_argument("--modality", default=None, choices=["clinical", "dermoscopic", "pathology"])
    p.add_argument("--image-root", default=None)
    _add_model_args(p)

    p = sub.add_parser("index", help="build a FAISS case index from shards")
    p.add_argument("--shards", required=True)
    p.add_argument("--out", required=True, help="index folder")
    p.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val", "test"])
    _add_model_args(p)

    p = sub.add_parser("search", help="find similar cases for an image or a text")
    p.add_argument("--index", required=True, help="index folder from `skinclip index`")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image")
    query.add_argument("--text")
    p.add_argument("--k", type=positive_int, default=5)
    _add_model_args(p)

    p = sub.add_parser("quickstart", help="shards -> training -> evaluation -> index on the atlas")
    p.add_argument("--data", default=None, help="folder holding derm7pt/ (default $SKINCLIP_DATA)")
    p.add_argument("--out", default="outputs/quickstart")
    p.add_argument("--config", default=None, help="training YAML (default: configs/quickstart)")
    p.add_argument(
        "--max-cases", type=positive_int, default=None, help="use only the first N cases"
    )
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=2)
    return parser


COMMANDS = {
    "shards": cmd_shards,
    "evaluate": cmd_evaluate,
    "zeroshot": cmd_zeroshot,
    "index": cmd_index,
    "search": cmd_search,
    "quickstart": cmd_quickstart,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # LightningCLI parses its own arguments, so `train` hands everything after it over.
    if argv[:1] == ["train"]:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            cmd_train(argparse.Namespace(), argv[1:])
        except (FileNotFoundError, ValueError) as err:
            logger.error("%s", err)
            return 2
        return 0
    args = parser.parse_args(argv)
    # Our own progress at INFO; the libraries' chatter (open_clip logs every loading step at
    # INFO on the root logger, faiss each CPU build it probes) only with --verbose.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in ("skinclip", "index"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
