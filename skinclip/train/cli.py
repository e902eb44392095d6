"""``skinclip train``: LightningCLI over the module and data module, plus export at the end."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from skinclip.model.towers import (
    SkinCLIPBundle,
    export_open_clip,
    own_train_splits,
    read_checkpoint,
)
from skinclip.train.datamodule import ShardDataModule
from skinclip.train.module import SkinCLIPModule, default_precision

logger = logging.getLogger(__name__)


class ExportOpenCLIP(Callback):
    """Write the trained model as an open_clip ``local-dir:`` folder when fitting ends.

    Args:
        dirpath: Target folder; ``None`` puts it at ``<default_root_dir>/export``.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath

    def on_fit_end(self, trainer: L.Trainer, pl_module: SkinCLIPModule) -> None:
        if not trainer.is_global_zero:
            return
        out = Path(self.dirpath or Path(trainer.default_root_dir) / "export")
        hp = pl_module.hparams
        bundle = SkinCLIPBundle(
            pl_module.model,
            None,
            pl_module.preprocess_val,
            pl_module.tokenizer,
            hp.model_name,
            f"{hp.model_name}@trained",
        )
        export_open_clip(bundle, out)
        logger.info("Exported open_clip model to %s", out)


class RootCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that defaults to ``<default_root_dir>/checkpoints``.

    Lightning would otherwise nest checkpoints under a new logger version on every run, and a
    restarted job could not find the ``last.ckpt`` of the run it continues.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            # Absolute: Lightning restores its record of last.ckpt only when the folder string
            # matches, and otherwise saves beside it as last-v1.ckpt, so one folder given once
            # as a relative path and once as an absolute one would split a run in two.
            self.dirpath = str((Path(trainer.default_root_dir) / "checkpoints").resolve())
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Steps after the last multiple of every_n_train_steps would otherwise be missing from
        # last.ckpt, and evaluating it would use older weights than the export.
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


def last_checkpoint(root: Path) -> Path | None:
    """The ``last.ckpt`` a killed run left under ``root``, if any."""
    path = Path(root) / "checkpoints" / "last.ckpt"
    return path if path.is_file() else None


def _refuse_fresh_run_over_earlier(root: Path) -> None:
    """Refuse a fresh run over an earlier run's ``last.ckpt``.

    Lightning would save the new run as ``last-v1.ckpt`` beside it, and a later
    ``--ckpt_path last`` would resume the old run instead of the new one.
    """
    previous = last_checkpoint(root)
    if previous is not None:
        raise ValueError(
            f"{previous} is the checkpoint of an earlier run. Pass --ckpt_path last to resume "
            "it, or start afresh in another --trainer.default_root_dir (or delete "
            f"{previous.parent})."
        )


def _refuse_resume_on_other_splits(path: Path, saved: dict, train_splits: tuple[str, ...]) -> None:
    """Refuse to continue a run on other training splits than it started with.

    A final fit (train + val) resumed with the tuning config (train alone), or the reverse,
    would give a model of neither recipe and overwrite the first run's checkpoint and export.
    """
    before = own_train_splits(saved)
    if before and set(before) != set(train_splits):
        raise ValueError(
            f"{path} is a run on the {'+'.join(before)} split(s), but this run trains on "
            f"{'+'.join(train_splits)} (data.train_splits). Pass the same config files as that "
            "run to resume it, or start afresh in another --trainer.default_root_dir."
        )


# Where the run reads and how many processes load it: moving the shards or changing the loader
# count changes nothing the run learns, so a resumed run may differ in these. The training
# splits are compared as a set, with their own message (_refuse_resume_on_other_splits).
_RESUMABLE_DATA_CHANGES = frozenset({"shards", "num_workers", "train_splits"})


def _changed_settings(saved, current, ignore: frozenset = frozenset()) -> list[str]:
    """``name: before -> now`` for each hyperparameter that differs; lists and tuples alike.

    Only names both sides know are compared, so that a checkpoint written before a setting
    existed can still be resumed.
    """

    def plain(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    saved, current = dict(saved or {}), dict(current or {})
    return [
        f"{name}: {saved[name]!r} -> {current[name]!r}"
        for name in sorted((saved.keys() & current.keys()) - ignore)
        if plain(saved[name]) != plain(current[name])
    ]


def _read_resumed(path: Path) -> dict:
    """The checkpoint a run resumes from; one that cannot be read is refused with the way out."""
    try:
        return read_checkpoint(path)
    except ValueError:
        raise ValueError(
            f"Cannot resume: {path} cannot be read as a Lightning checkpoint (a run killed while "
            "saving can leave it cut short). To start afresh, move its last.ckpt away or pass "
            "another --trainer.default_root_dir."
        ) from None


def _refuse_resume_with_other_settings(path: Path, saved: dict, model, datamodule) -> None:
    """Refuse to continue a run whose model or data settings have changed since it started.

    Lightning resumes with whatever settings it is given, so a run started with one diagnosis
    term, learning rate or crop size and resumed with another would finish as a model of
    neither recipe, with nothing in its checkpoint to say so.
    """
    changed = [
        f"model.{c}" for c in _changed_settings(saved.get("hyper_parameters"), model.hparams)
    ]
    changed += [
        f"data.{c}"
        for c in _changed_settings(
            saved.get("datamodule_hyper_parameters"), datamodule.hparams, _RESUMABLE_DATA_CHANGES
        )
    ]
    if changed:
        raise ValueError(
            f"{path} was trained with other settings than this run ({'; '.join(changed)}). "
            "Resuming would mix two recipes. Pass the same config files and options as that "
            "run to resume it, or start afresh in another --trainer.default_root_dir."
        )


class ResumableCLI(LightningCLI):
    """LightningCLI where ``--ckpt_path last`` resumes from
    ``<default_root_dir>/checkpoints/last.ckpt`` (and starts afresh, saying so, without one),
    and a fresh run refuses a folder that holds an earlier run's ``last.ckpt``.
    """

    def __init__(self, *args, **kwargs):
        # The lightning package gives its logger a console of its own on import and also
        # passes every record on to the root logger, so once our command lines have set up
        # the root logger each Lightning message would be printed twice.
        if logging.getLogger().handlers:
            logging.getLogger("lightning").handlers.clear()
        super().__init__(*args, **kwargs)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        root = Path(self.trainer.default_root_dir)
        if config.get("ckpt_path") is None and self.trainer.global_rank == 0:
            _refuse_fresh_run_over_earlier(root)
        if config.get("ckpt_path") == "last":
            path = last_checkpoint(root)
            if path is None:
                logger.warning(
                    "No last.ckpt under %s/checkpoints: training starts from the beginning.",
                    self.trainer.default_root_dir,
                )
            config["ckpt_path"] = str(path) if path else None
        resumed = config.get("ckpt_path")
        # SkinVL's data module has no train_splits; other ckpt_path values name no file.
        if resumed and Path(resumed).is_file():
            path = Path(resumed)
            saved = _read_resumed(path)
            if hasattr(self.datamodule, "train_splits"):
                _refuse_resume_on_other_splits(path, saved, tuple(self.datamodule.train_splits))
            _refuse_resume_with_other_settings(path, saved, self.model, self.datamodule)


class SkinCLIPCLI(ResumableCLI):
    """The training CLI, with the model's name and resolution shared with the data module."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.model_name", "data.model_name")
        parser.link_arguments("model.image_size", "data.image_size")


def run_training(args: list[str] | None = None) -> SkinCLIPCLI:
    """Run LightningCLI with SkinCLIP defaults; ``args`` as on the command line.

    Checkpoints go to ``<default_root_dir>/checkpoints``: ``last.ckpt`` every 10 steps and at
    the end, so a killed run resumes with ``--ckpt_path last``.
    """
    # The arguments reach LightningCLI explicitly, and sys.argv must stay as it is: DDP starts
    # its other processes by running this process's command line again. LightningCLI warns
    # when it sees both.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # The Hugging Face text transformer trains in eval mode, without dropout, on purpose (see
    # SkinCLIPModule.set_training_modes); Lightning's warning about it would only alarm users.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    trainer_defaults = {
        "precision": default_precision(cpu_bf16=False),
        "callbacks": [
            RootCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=10),
            ExportOpenCLIP(),
        ],
        "log_every_n_steps": 5,
    }
    return SkinCLIPCLI(
        SkinCLIPModule,
        ShardDataModule,
        trainer_defaults=trainer_defaults,
        args=args,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "skinclip train", "allow_abbrev": False},
    )
