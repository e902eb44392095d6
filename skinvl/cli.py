"""The ``skinvl`` command: ``train`` (LightningCLI, configs/skinvl_*.yaml), ``ask`` and
``evaluate``."""

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
    first_line,
    positive_int,
)

logger = logging.getLogger("skinvl")


def check_training_inputs(skinclip_checkpoint, init_from, shards) -> None:
    """Fail before any model is built when a file the run needs is missing.

    Raises:
        FileNotFoundError: Naming the file, its config key and how to make it.
    """
    if skinclip_checkpoint and not Path(skinclip_checkpoint).is_file():
        raise FileNotFoundError(
            f"SkinCLIP checkpoint not found: {skinclip_checkpoint} (model.skinclip_checkpoint). "
            "Run `skinclip quickstart --data DATA` first, or point --model.skinclip_checkpoint "
            "at a SkinCLIP last.ckpt."
        )
    if init_from and not Path(init_from).is_file():
        raise FileNotFoundError(
            f"Stage-1 checkpoint not found: {init_from} (model.init_from). Train stage 1 first "
            "with `skinvl train --config configs/skinvl_align.yaml`, or point --model.init_from "
            "at its checkpoints/last.ckpt."
        )
    from skinclip.data.shards import read_manifest

    read_manifest(Path(shards))  # names the folder and how to write shards there


def run_training(args: list[str]):
    """LightningCLI over SkinVLModule and QADataModule; ``--ckpt_path last`` resumes."""
    from skinclip.train.cli import ResumableCLI

    class SkinVLCLI(ResumableCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments("model.image_size", "data.image_size")
            parser.link_arguments("model.stage", "data.stage")

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand]
            check_training_inputs(
                config.model.skinclip_checkpoint, config.model.init_from, config.data.shards
            )
            if config.model.image_size < 32 or config.data.batch_size < 1:
                raise ValueError(
                    "model.image_size must be at least 32 and data.batch_size at least 1; got "
                    f"{config.model.image_size} and {config.data.batch_size}."
                )

    sys.argv = sys.argv[:1]  # LightningCLI gets its arguments explicitly
    try:
        return _fit(SkinVLCLI, args)
    except RuntimeError as err:
        first = first_line(err)
        if "state_dict" not in first and "PytorchStreamReader" not in first:
            raise
        raise ValueError(
            f"A checkpoint does not fit this run ({first}). When resuming (--ckpt_path last), "
            "use the settings the run was started with, or move its last.ckpt away (it may be "
            "damaged) or pick another --trainer.default_root_dir; --model.init_from must be a "
            "stage-1 `skinvl train` checkpoint of the same model."
        ) from None


def _fit(cli_class, args: list[str]):
    """Run ``cli_class`` (a LightningCLI) on SkinVL with its checkpoints and precision."""
    from skinclip.train.cli import RootCheckpoint
    from skinclip.train.module import default_precision
    from skinvl.data import QADataModule
    from skinvl.module import SkinVLModule

    return cli_class(
        SkinVLModule,
        QADataModule,
        trainer_defaults={
            "precision": default_precision(),
            "callbacks": [RootCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=10)],
            "log_every_n_steps": 5,
        },
        args=["fit", *args],
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "skinvl train", "allow_abbrev": False},
    )


def read_checkpoint(checkpoint: str) -> dict:
    """A ``skinvl train`` checkpoint's contents, checked to be one.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not a SkinVL checkpoint (for example a SkinCLIP one).
    """
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"SkinVL checkpoint not found: {path}. Train one with `skinvl train --config "
            "configs/skinvl_instruct.yaml`; it is saved as checkpoints/last.ckpt."
        )
    try:
        # mmap: only what is read comes off the disk; the weights are read again when loaded.
        content = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # torch raises many kinds for a damaged or foreign file
        raise ValueError(f"Cannot read {path} as a checkpoint ({type(err).__name__}).") from None
    hparams = content.get("hyper_parameters", {}) if isinstance(content, dict) else {}
    if not {"stage", "projector", "language_model"} <= set(hparams):
        states = content.get("state_dict", content) if isinstance(content, dict) else {}
        clip = any(str(k).startswith(("text.", "model.text.")) for k in states)
        kind = "a SkinCLIP checkpoint" if clip else "something else"
        raise ValueError(
            f"{path} is {kind}, not a SkinVL checkpoint. Give the one `skinvl train` writes, "
            "e.g. outputs/skinvl/instruct/checkpoints/last.ckpt."
        )
    return content


def load_trained(checkpoint: str):
    """(SkinVL model in eval mode, image size) from a ``skinvl train`` checkpoint."""
    from skinvl.module import SkinVLModule

    read_checkpoint(checkpoint)
    try:
        # The checkpoint holds every weight, encoder included, so the SkinCLIP checkpoint and
        # the stage-1 checkpoint it was built from need not exist any more.
        module = SkinVLModule.load_from_checkpoint(
            checkpoint, map_location="cpu", skinclip_checkpoint=None, init_from=None
        )
    except (KeyError, RuntimeError, TypeError) as err:
        if "embedding_projector" in str(err):
            raise ValueError(
                f"{checkpoint} was trained by an earlier SkinVL, without the SkinCLIP-embedding "
                "token; train both stages again with `skinvl train`."
            ) from None
        raise ValueError(
            f"{checkpoint} does not fit this SkinVL model ({first_line(err)})."
        ) from None
    return module.model.eval(), module.hparams.image_size


def cmd_ask(args: argparse.Namespace) -> None:
    """Answer each question about one image, in one batch; one answer per line, or
    ``question<TAB>answer`` lines when there are several."""
    from PIL import Image, UnidentifiedImageError

    from skinclip.data.images import decode_image
    from skinclip.train.transforms import eval_transform
    from skinvl.model import check_questions, generate

    image_path = Path(args.image)
    if image_path.is_dir():
        raise ValueError(f"{image_path} is a folder; give one image file.")
    if not image_path.is_file():
        raise FileNotFoundError(f"Image not found: {image_path}")
    try:
        picture = decode_image(image_path.read_bytes())
    except UnidentifiedImageError:
        raise ValueError(
            f"{image_path} is not an image Pillow can read (JPEG, PNG, TIFF, BMP, WebP...)."
        ) from None
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"Cannot read {image_path} as an image ({err}).") from None
    check_questions(args.question)
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
    answers = [answer or "(an empty answer)" for answer in answers]
    if len(answers) == 1:
        print(answers[0])
    else:
        for question, answer in zip(args.question, answers, strict=True):
            print(f"{' '.join(question.split())}\t{answer}")  # one line, one tab


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Answers and scores first (written as soon as they exist), then the SkinCLIP baseline."""
    from skinclip.data.shards import read_manifest, write_json_atomic, write_jsonl_atomic
    from skinvl.evaluate import evaluate_atlas, skinclip_baseline

    shards, out = Path(args.shards), Path(args.out)
    # Everything that can be checked cheaply is, before an hour of generation.
    read_manifest(shards)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the report.")
    skinclip = args.skinclip_checkpoint
    if skinclip is None and args.limit is None:
        skinclip = read_checkpoint(args.checkpoint)["hyper_parameters"]["skinclip_checkpoint"]
        if not skinclip:
            raise ValueError(
                f"{args.checkpoint} was trained from the untrained SkinCLIP model, so there is "
                "no SkinCLIP checkpoint to compare with: pass --skinclip-checkpoint, or --limit "
                "for a quick look without the baseline."
            )
        logger.info("SkinCLIP baseline: %s (the checkpoint SkinVL was trained from)", skinclip)
    if skinclip is not None and not Path(skinclip).exists():
        raise FileNotFoundError(
            f"SkinCLIP checkpoint for the baseline not found: {skinclip}. Pass "
            "--skinclip-checkpoint with the one SkinVL was trained from."
        )
    model, image_size = load_trained(args.checkpoint)
    report, records = evaluate_atlas(
        model,
        image_size,
        shards,
        split=args.split,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "skinvl_answers.jsonl", records)
    report["skinclip_zeroshot_diagnosis"] = None
    write_json_atomic(out / "skinvl_report.json", report)
    if skinclip is not None:
        report["skinclip_zeroshot_diagnosis"] = skinclip_baseline(skinclip, shards, args.split)
        write_json_atomic(out / "skinvl_report.json", report)
    logger.info("Wrote %s and every answer to skinvl_answers.jsonl beside it", out)
    print(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging(("skinvl", "skinclip", "lightning.pytorch"))
    if argv[:1] == ["train"]:
        return exit_code(logger, run_training, argv[1:])
    parser = StrictParser(prog="skinvl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a stage (e.g. --config configs/skinvl_align.yaml)")
    p = sub.add_parser("ask", help="answer a question about an image")
    p.add_argument("image")
    p.add_argument("question", nargs="+", help="one or more questions, answered in one batch")
    p.add_argument("--checkpoint", required=True, help="a `skinvl train` last.ckpt")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--strategy", default="greedy", choices=["greedy", "beam", "sample"])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("evaluate", help="atlas test split: SkinVL, blank image, SkinCLIP")
    p.add_argument("shards", help="atlas shard folder")
    p.add_argument("--checkpoint", required=True, help="a `skinvl train` last.ckpt")
    p.add_argument(
        "--skinclip-checkpoint",
        default=None,
        help="SkinCLIP weights for the zero-shot baseline (default: the ones SkinVL was "
        "trained from)",
    )
    p.add_argument("--out", required=True, help="folder for skinvl_report.json")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="only the first N questions, a quick look: no SkinCLIP baseline",
    )
    args = parser.parse_args(argv)
    return exit_code(logger, {"ask": cmd_ask, "evaluate": cmd_evaluate}[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
