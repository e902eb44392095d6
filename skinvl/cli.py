"""The ``skinvl`` command: ``train`` (LightningCLI, configs/skinvl_*.yaml), ``ask`` and
``evaluate``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from skinclip.cli import exit_code

logger = logging.getLogger("skinvl")


def run_training(args: list[str]):
    """LightningCLI over SkinVLModule and QADataModule; ``--ckpt_path last`` resumes."""
    from skinclip.train.cli import ResumableCLI, RootCheckpoint
    from skinclip.train.module import default_precision
    from skinvl.data import QADataModule
    from skinvl.module import SkinVLModule

    class SkinVLCLI(ResumableCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments("model.image_size", "data.image_size")
            parser.link_arguments("model.stage", "data.stage")

    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments explicitly
    return SkinVLCLI(
        SkinVLModule,
        QADataModule,
        trainer_defaults={
            "precision": default_precision(),
            "callbacks": [RootCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=10)],
            "log_every_n_steps": 5,
        },
        args=["fit", *args],
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "skinvl train"},
    )


def load_trained(checkpoint: str):
    """A SkinVL model from a ``skinvl train`` checkpoint (``last.ckpt``)."""
    from skinvl.module import SkinVLModule

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"SkinVL checkpoint not found: {path}. Train one with `skinvl train --config "
            "configs/skinvl_instruct.yaml`; it is saved as checkpoints/last.ckpt."
        )
    try:
        # The checkpoint holds every weight, encoder included, so the SkinCLIP checkpoint and
        # the stage-1 checkpoint it was built from need not exist any more.
        module = SkinVLModule.load_from_checkpoint(
            path, map_location="cpu", skinclip_checkpoint=None, init_from=None
        )
    except (KeyError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path} is not a SkinVL checkpoint ({err}).") from None
    return module.model.eval(), module.hparams.image_size


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_ask(args: argparse.Namespace) -> None:
    """Answer each question about one image, in one batch; one answer per line, or
    ``question<TAB>answer`` lines when there are several."""
    from skinclip.data.images import decode_image
    from skinclip.train.transforms import eval_transform
    from skinvl.model import generate

    image_path = Path(args.image)
    if not image_path.is_file():
        raise FileNotFoundError(f"Image not found: {image_path}")
    try:
        picture = decode_image(image_path.read_bytes())
    except OSError as err:
        raise ValueError(f"Cannot read {image_path} as an image ({err}).") from None
    if any(not q.strip() for q in args.question):
        raise ValueError("A question is empty; ask something about the image.")
    model, image_size = load_trained(args.checkpoint)  # checked after the cheap inputs
    image = eval_transform(image_size)(picture)
    answers = generate(
        model,
        image[None].repeat(len(args.question), 1, 1, 1),
        args.question,
        max_new_tokens=args.max_new_tokens,
        strategy=args.strategy,
        seed=args.seed,
    )
    if len(answers) == 1:
        print(answers[0])
    else:
        for question, answer in zip(args.question, answers, strict=True):
            print(f"{question.strip()}\t{answer}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from skinclip.data.shards import write_json_atomic
    from skinvl.evaluate import evaluate_atlas

    model, image_size = load_trained(args.checkpoint)
    report = evaluate_atlas(
        model,
        image_size,
        Path(args.shards),
        args.skinclip_checkpoint,
        split=args.split,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "skinvl_report.json", report)
    print(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["train"]:
        return exit_code(logger, run_training, argv[1:])
    parser = argparse.ArgumentParser(prog="skinvl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a stage (e.g. --config configs/skinvl_align.yaml)")
    p = sub.add_parser("ask", help="answer a question about an image")
    p.add_argument("image")
    p.add_argument("question", nargs="+", help="one or more questions, answered in one batch")
    p.add_argument("--checkpoint", required=True, help="a `skinvl train` last.ckpt")
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample"])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("evaluate", help="atlas test split: SkinVL, blank image, SkinCLIP")
    p.add_argument("shards", help="atlas shard folder")
    p.add_argument("--checkpoint", required=True, help="a `skinvl train` last.ckpt")
    p.add_argument("--skinclip-checkpoint", default=None, help="for the zero-shot baseline")
    p.add_argument("--out", required=True, help="folder for skinvl_report.json")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--max-new-tokens", type=_positive, default=64)
    p.add_argument("--limit", type=_positive, default=None, help="only the first N questions")
    args = parser.parse_args(argv)
    return exit_code(logger, {"ask": cmd_ask, "evaluate": cmd_evaluate}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
