"""Training: one step of a tiny random model, decay groups, validation metrics and resume."""

import csv
import io
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import build_tiny_shards
from PIL import Image

from skinclip.data.captions import diagnosis_caption
from skinclip.train.cli import RootCheckpoint, run_training
from skinclip.train.datamodule import ShardDataModule
from skinclip.train.diagnosis_loss import diagnosis_loss
from skinclip.train.module import SkinCLIPModule
from skinclip.train.padding import trims_padding
from skinclip.train.transforms import eval_transform

TINY = {"image_size": 32, "pretrained_towers": False, "warmup_steps": 1}


def _trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "limit_val_batches": 0,
        "enable_checkpointing": False,
    }
    options.update(kwargs)
    return L.Trainer(**options)


def _data(shards: Path, batch_size: int = 4) -> ShardDataModule:
    return ShardDataModule(str(shards), image_size=32, batch_size=batch_size, num_workers=0)


def test_one_training_step_updates_trainable_weights_only(tiny_shards, tmp_path):
    module = SkinCLIPModule(**TINY)
    proj_before = module.model.visual.head.proj.weight.detach().clone()
    text_before = module.model.text.transformer.encoder.layer[0].output.dense.weight.clone()

    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=_data(tiny_shards))

    assert trainer.global_step == 1
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert not torch.equal(proj_before, module.model.visual.head.proj.weight)
    # The locked text transformer must not move.
    assert torch.equal(
        text_before, module.model.text.transformer.encoder.layer[0].output.dense.weight
    )


def test_a_model_with_open_clips_own_text_tower_trains(tiny_shards, tmp_path):
    # Its text transformer needs the full context length: padding must not be trimmed.
    module = SkinCLIPModule(
        model_name="ViT-B-32", image_size=32, warmup_steps=1, diagnosis_loss_weight=1.0
    )
    assert not trims_padding(module.model) and trims_padding(SkinCLIPModule(**TINY).model)
    assert module.model.text_projection.requires_grad  # open_clip's own lock froze it
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(module, datamodule=_data(tiny_shards))
    assert trainer.global_step == 1


def test_no_weight_decay_on_norms_biases_and_logit_scale():
    module = SkinCLIPModule(**TINY)
    names = {id(p): n for n, p in module.model.named_parameters()}
    for group in module._param_groups():
        for param in group["params"]:
            name = names[id(param)]
            exempt = param.ndim < 2 or "bias" in name or "logit_scale" in name
            assert (group["weight_decay"] == 0.0) == exempt, name
    logit_group = next(
        g for g in module._param_groups() if any(p is module.model.logit_scale for p in g["params"])
    )
    assert logit_group["weight_decay"] == 0.0


def test_fixed_logit_scale_holds_through_training(tiny_shards, tmp_path):
    module = SkinCLIPModule(**TINY, fixed_logit_scale=5.0)
    assert all(
        p is not module.model.logit_scale for g in module._param_groups() for p in g["params"]
    )
    _trainer(tmp_path, max_steps=2).fit(module, datamodule=_data(tiny_shards))
    assert module.model.logit_scale.exp().item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="model.fixed_logit_scale must be in .*Leave it out"):
        SkinCLIPModule(**TINY, fixed_logit_scale=0.0)


def test_validation_logs_recall_and_zeroshot(tiny_shards, tmp_path):
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=None)
    trainer.fit(SkinCLIPModule(**TINY), datamodule=_data(tiny_shards))
    metrics = trainer.callback_metrics
    for key in ("val/loss", "val/text_to_image_R@10", "val/zeroshot_balanced_acc"):
        assert key in metrics
    assert 0.0 <= float(metrics["val/zeroshot_balanced_acc"]) <= 1.0
    assert 0.0 <= float(metrics["val/image_to_text_R@10"]) <= 1.0


def test_resume_continues_from_last_checkpoint(tiny_shards, tmp_path):
    def trainer(max_steps: int) -> L.Trainer:
        saver = RootCheckpoint(save_last=True, save_top_k=0, every_n_train_steps=2)
        return _trainer(tmp_path, max_steps=max_steps, enable_checkpointing=True, callbacks=[saver])

    trainer(3).fit(SkinCLIPModule(**TINY), datamodule=_data(tiny_shards))
    last = tmp_path / "checkpoints" / "last.ckpt"
    # Step 3 is not a multiple of 2: the end of training must still reach last.ckpt.
    assert torch.load(last, weights_only=False)["global_step"] == 3

    second = trainer(4)
    second.fit(SkinCLIPModule(**TINY), datamodule=_data(tiny_shards), ckpt_path=str(last))
    assert second.global_step == 4
    assert torch.load(last, weights_only=False)["global_step"] == 4


def test_lightning_cli_with_yaml_config_trains_exports_and_resumes(
    tiny_shards, tmp_path, recwarn, monkeypatch
):
    root = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    common = ["--config", str(config), "--data.shards", str(tiny_shards)]
    common += ["--data.num_workers", "0", "--data.batch_size", "4", "--model.image_size", "32"]
    common += ["--data.train_image_size", "32"]
    common += ["--model.pretrained_towers", "false", "--trainer.limit_val_batches", "0"]
    common += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    cli = run_training(["fit", *common, "--trainer.max_steps", "2"])
    if not torch.cuda.is_available():  # float32 on CPUs: see default_precision
        assert str(cli.trainer.precision) == "32-true"
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert (root / "export" / "open_clip_config.json").is_file()
    assert (root / "export" / "open_clip_model.safetensors").is_file()
    # The text transformer trains in eval mode by design; users are not warned about it.
    assert not [w for w in recwarn if "in eval mode" in str(w.message)]

    # A fresh run must not bury this run's last.ckpt under a last-v1.ckpt.
    with pytest.raises(ValueError, match="checkpoint of an earlier run.*--ckpt_path last"):
        run_training(["fit", *common, "--trainer.max_steps", "2"])

    # A restarted run finds last.ckpt by name and continues the step count.
    run_training(["fit", *common, "--trainer.max_steps", "3", "--ckpt_path", "last"])
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3

    # The final fit's config must not continue this train-only run (nor the reverse).
    final_fit = str(config.parent / "final_fit.yaml")
    last = root / "checkpoints" / "last.ckpt"
    for resume in ("last", str(last)):
        with pytest.raises(ValueError, match=r"a run on the train split\(s\), but this run "):
            run_training(["fit", *common, "--config", final_fit, "--ckpt_path", resume])
    assert torch.load(last, weights_only=False)["global_step"] == 3

    # Nor may a run continue under another recipe: Lightning would take the new settings.
    changed = ["--model.diagnosis_loss_level", "diagnosis", "--data.balance_power", "1.0"]
    expected = r"model.diagnosis_loss_level: 'group' -> 'diagnosis'.*data.balance_power: 0.5 -> 1"
    with pytest.raises(ValueError, match=expected):
        run_training(["fit", *common, *changed, "--ckpt_path", "last"])
    assert torch.load(last, weights_only=False)["global_step"] == 3
    # Where the shards are read from and by how many workers is not part of the recipe.
    moved = tmp_path / "moved"
    shutil.copytree(tiny_shards, moved)
    args = [*common, "--data.shards", str(moved), "--trainer.max_steps", "4"]
    run_training(["fit", *args, "--ckpt_path", "last"])
    assert torch.load(last, weights_only=False)["global_step"] == 4
    # Lightning's own console is dropped once the root logger has one (pytest's), so that
    # its messages are not printed twice.
    assert not logging.getLogger("lightning").handlers

    # Fine-tuning records where it started as an absolute path, traceable from anywhere.
    monkeypatch.chdir(root)
    tuned = SkinCLIPModule(pretrained="checkpoints/last.ckpt", image_size=32)
    assert tuned.hparams.pretrained == str(last.resolve())


def test_datamodule_reports_missing_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="skinclip shards"):
        ShardDataModule(str(tmp_path / "nowhere"))


def test_resampled_epochs_have_the_nominal_length(tiny_shards):
    data = ShardDataModule(
        str(tiny_shards), image_size=32, batch_size=4, num_workers=0, resample=True
    )
    batches = list(data.train_dataloader())
    assert len(batches) == data.steps_per_epoch() == 4  # 16 training images / batch 4


def test_balancing_repeats_rare_groups(tiny_shards):
    plain = ShardDataModule(str(tiny_shards), image_size=32, batch_size=4, num_workers=0)
    balanced = ShardDataModule(
        str(tiny_shards), image_size=32, batch_size=4, num_workers=0, balance_power=0.5
    )
    # The tiny training split has 4 groups of equal size: nothing to repeat.
    assert set(balanced.repeat_factors().values()) == {1.0}
    assert balanced.split_size("train") == plain.split_size("train") == 16


def test_trimmed_padding_embeds_exactly_like_full_context():
    from skinclip.model.towers import create_skinclip
    from skinclip.train.padding import trim_padding

    bundle = create_skinclip(image_size=64)
    tokens = bundle.tokenizer(["nevus.", "a dermoscopic image of a Clark nevus on the back."])
    trimmed = trim_padding(tokens)
    longest = int((tokens != 0).sum(dim=1).max())
    assert tokens.shape[1] == 77 and trimmed.shape[1] == longest
    with torch.no_grad():
        full = bundle.model.encode_text(tokens)
        short = bundle.model.encode_text(trimmed)
    assert torch.allclose(full, short, atol=1e-5)
    assert torch.equal(trim_padding(torch.zeros(2, 5, dtype=torch.long)), torch.zeros(2, 5))


@pytest.mark.parametrize("pretrained_towers", [True, False])
def test_training_modes_do_not_depend_on_how_the_towers_were_built(pretrained_towers):
    module = SkinCLIPModule(image_size=32, pretrained_towers=pretrained_towers)
    assert module.model.visual.training
    assert module.model.text.proj.training
    # The Hugging Face text transformer trains without dropout either way.
    assert not any(m.training for m in module.model.text.transformer.modules())


def test_diagnosis_loss_is_cross_entropy_over_the_batch_diagnoses_of_each_modality():
    module = SkinCLIPModule(**TINY, diagnosis_loss_weight=0.5).eval()
    torch.manual_seed(0)
    image_embeds = torch.nn.functional.normalize(torch.randn(4, 256), dim=-1)  # (B, D)
    diagnoses = ["clark nevus", "melanoma (in situ)", "", "clark nevus"]
    modalities = ["dermoscopic", "clinical", "clinical", "clinical"]
    scale = torch.tensor(10.0)
    with torch.no_grad():
        loss = diagnosis_loss(
            module.model, module._tokenize, image_embeds, diagnoses, modalities, scale
        )
        embeds = {
            (m, d): module.model.encode_text(
                module.tokenizer([diagnosis_caption(d, m)]), normalize=True
            )[0]
            for m in ("clinical", "dermoscopic")
            for d in ("clark nevus", "melanoma (in situ)")
        }
    # The image without a diagnosis is left out; the others score their own modality's texts.
    expected = []
    for i, target in ((0, 0), (1, 1), (3, 0)):
        mod = modalities[i]
        classes = torch.stack([embeds[(mod, "clark nevus")], embeds[(mod, "melanoma (in situ)")]])
        logits = scale * image_embeds[i] @ classes.T  # (C,)
        expected.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([target])))
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)

    # Spellings that differ only in case or spacing are one class, not contradicting ones.
    folded = ["Clark Nevus", "melanoma (in situ)", "", " clark  nevus"]
    with torch.no_grad():
        args = (module.model, module._tokenize, image_embeds, folded, modalities, scale)
        assert diagnosis_loss(*args).item() == pytest.approx(loss.item(), rel=1e-4)

    # One diagnosis (or none) leaves nothing to tell apart.
    one = ["clark nevus", "", "clark nevus", ""]
    assert (
        diagnosis_loss(module.model, module._tokenize, image_embeds, one, modalities, scale) is None
    )


def test_diagnosis_loss_weight_adds_to_the_training_loss(tiny_shards, tmp_path):
    losses = {}
    for weight in (0.0, 2.0):
        L.seed_everything(0)
        module = SkinCLIPModule(**TINY, diagnosis_loss_weight=weight)
        trainer = _trainer(tmp_path, max_steps=1, log_every_n_steps=1)
        trainer.fit(module, datamodule=_data(tiny_shards, batch_size=8))
        losses[weight] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    with_dx = losses[2.0]
    assert "train/diagnosis_loss" not in losses[0.0]
    assert with_dx["train/diagnosis_loss"] > 0
    assert with_dx["train/loss"] == pytest.approx(
        with_dx["train/clip_loss"] + 2.0 * with_dx["train/diagnosis_loss"], rel=1e-5
    )
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="diagnosis_loss_weight must be a finite number"):
            SkinCLIPModule(**TINY, diagnosis_loss_weight=bad)


def test_logit_adjustment_adds_the_log_batch_share_of_each_diagnosis():
    module = SkinCLIPModule(**TINY).eval()
    torch.manual_seed(0)
    image_embeds = torch.nn.functional.normalize(torch.randn(4, 256), dim=-1)  # (B, D)
    diagnoses = ["clark nevus", "clark nevus", "clark nevus", "lentigo"]
    modalities = ["clinical"] * 4
    scale = torch.tensor(10.0)
    with torch.no_grad():
        args = (module.model, module._tokenize, image_embeds, diagnoses, modalities, scale)
        plain, adjusted = diagnosis_loss(*args), diagnosis_loss(*args, logit_adjustment=2.0)
        texts = [diagnosis_caption(d, "clinical") for d in ("clark nevus", "lentigo")]
        classes = module.model.encode_text(module.tokenizer(texts), normalize=True)  # (C, D)
    logits = scale * image_embeds @ classes.T + 2.0 * torch.tensor([0.75, 0.25]).log()  # (B, C)
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 0, 1]))
    assert adjusted.item() == pytest.approx(expected.item(), rel=1e-4)
    assert adjusted.item() != pytest.approx(plain.item(), rel=1e-2)
    for bad in (-1.0, float("nan"), float("inf"), 1e39, True, "1.0", None):
        with pytest.raises(ValueError, match="diagnosis_logit_adjustment must be a number from 0"):
            SkinCLIPModule(**TINY, diagnosis_logit_adjustment=bad)


def test_diagnosis_term_at_group_level_scores_groups_not_subtypes():
    batch = {
        "images": torch.randn(4, 3, 32, 32),
        "captions": ["a", "b", "c", "d"],
        "modalities": ["dermoscopic"] * 4,
        "diagnoses": ["melanoma (in situ)", "melanoma (more than 1.5 mm)", "blue nevus", "lentigo"],
        "diagnosis_groups": ["melanoma", "melanoma", "nevus", "lentigo"],
    }
    levels = {}
    for level in ("diagnosis", "group"):
        torch.manual_seed(0)
        module = SkinCLIPModule(**TINY, diagnosis_loss_weight=1.0, diagnosis_loss_level=level)
        module.eval()
        batch["tokens"] = module.tokenizer(batch["captions"])
        with torch.no_grad():
            losses = module.training_losses(batch)
            image_embeds, _ = module(batch["images"], batch["tokens"])
            scale = module.model.logit_scale.exp()
            args = (module.model, module._tokenize, image_embeds)
            by_group = diagnosis_loss(*args, batch["diagnosis_groups"], batch["modalities"], scale)
            by_dx = diagnosis_loss(*args, batch["diagnoses"], batch["modalities"], scale)
        levels[level] = (losses["diagnosis"].item(), by_group.item(), by_dx.item())
    # The same weights (seeded) score 3 groups at one level and 4 diagnoses at the other.
    assert levels["group"][0] == pytest.approx(levels["group"][1], rel=1e-5)
    assert levels["diagnosis"][0] == pytest.approx(levels["diagnosis"][2], rel=1e-5)
    assert levels["group"][0] != pytest.approx(levels["diagnosis"][0], rel=1e-3)

    # Two subtypes of one group leave nothing to tell apart at the group level.
    batch["diagnosis_groups"] = ["melanoma", "melanoma", "", ""]
    with torch.no_grad():
        assert "diagnosis" not in module.training_losses(batch)
    # A loader of its own, without groups: the diagnoses stand in for them.
    del batch["diagnosis_groups"]
    with torch.no_grad():
        assert module.training_losses(batch)["diagnosis"].item() == pytest.approx(by_dx.item())
    for bad in ("subtype", ["group"], None):
        with pytest.raises(ValueError, match="diagnosis_loss_level must be one of 'diagnosis'"):
            SkinCLIPModule(**TINY, diagnosis_loss_level=bad)


def test_first_batches_mix_diagnoses_of_a_shard_written_in_diagnosis_order(tmp_path):
    from skinclip.data.records import ImageRecord
    from skinclip.data.shards import write_shards

    # 4 diagnoses in blocks of 100, as the atlas lists its cases. Starting to draw after 100
    # samples (webdataset's default) could only mix the first two blocks into the first batch.
    image = tmp_path / "lesion.png"
    Image.new("RGB", (40, 32), (120, 80, 60)).save(image)
    records = []
    for i in range(400):
        dx = f"diagnosis {i // 100}"
        meta = {"case_id": f"c{i:03d}", "modality": "clinical", "diagnosis": dx, "split": "train"}
        records.append(ImageRecord(f"c{i:03d}", image, (f"{dx}, clinical image.",), meta))
    write_shards(records, tmp_path / "shards", shard_size=1000, source_name="ordered")
    data = ShardDataModule(
        str(tmp_path / "shards"), image_size=32, batch_size=16, num_workers=0, shuffle_buffer=400
    )
    batches = list(data.train_dataloader())
    assert len(set(batches[0]["diagnoses"])) >= 3  # fails only by a chance of about 1e-4
    seen = sorted(d for batch in batches for d in batch["diagnoses"])
    assert seen == sorted(r.meta["diagnosis"] for r in records)  # one epoch, each sample once


def test_final_fit_trains_on_train_and_val_with_its_own_crop_size(tiny_shards):
    data = ShardDataModule(
        str(tiny_shards),
        image_size=48,
        train_image_size=32,
        batch_size=4,
        num_workers=0,
        train_splits=["train", "val"],
    )
    assert _data(tiny_shards).train_size() == 16  # 8 cases of each split, 2 images each
    assert data.train_size() == 32 and data.steps_per_epoch() == 8
    batches = list(data.train_dataloader())
    assert sum(len(b["captions"]) for b in batches) == 32
    assert {tuple(b["images"].shape[-2:]) for b in batches} == {(32, 32)}
    assert next(iter(data.val_dataloader()))["images"].shape[-2:] == (48, 48)


def test_bad_train_splits_are_named(tiny_shards):
    for bad in ("train", [], ["train", "vla"], ["train", "train"]):
        with pytest.raises(ValueError, match=r"data.train_splits must be a list .*'train'"):
            ShardDataModule(str(tiny_shards), train_splits=bad)
    with pytest.raises(ValueError, match="data.train_image_size must be a positive"):
        ShardDataModule(str(tiny_shards), train_image_size=0)


def test_each_sample_carries_its_diagnosis_and_group_with_fallbacks(tiny_shards):
    data = _data(tiny_shards)
    image = Image.new("RGB", (40, 32), (120, 80, 60))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    sample = {"jpg": buffer.getvalue(), "txt": b"a clinical image of nevus"}
    for meta, diagnosis, group in (
        ({"diagnosis": "blue nevus", "label": "nevus"}, "blue nevus", "blue nevus"),
        ({"diagnosis": "blue nevus", "diagnosis_group": "nevus"}, "blue nevus", "nevus"),
        ({"label": "nevus"}, "nevus", "nevus"),
        ({"diagnosis": None}, "", ""),
    ):
        sample["json"] = json.dumps({"modality": "clinical", **meta}).encode()
        assert data._to_sample(sample, eval_transform(32), train=False)[-2:] == (diagnosis, group)


def test_ddp_on_two_cpu_processes_trains_and_validates_from_the_command_line(tmp_path):
    # One shard per split: fewer validation shards than processes once deadlocked DDP.
    shards = build_tiny_shards(tmp_path / "data", shard_size=64)
    # DDP starts its second process by running the command line again, so this has to go
    # through a real command line, not run_training in this process.
    root = tmp_path / "ddp"
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    command = [sys.executable, "-m", "skinclip.cli", "train", "--config", str(config)]
    command += ["--data.shards", str(shards), "--data.num_workers", "0"]
    command += ["--data.batch_size", "4", "--model.image_size", "32"]
    command += ["--data.train_image_size", "32"]
    command += ["--model.pretrained_towers", "false", "--trainer.max_epochs", "1"]
    command += ["--trainer.default_root_dir", str(root), "--trainer.accelerator", "cpu"]
    command += ["--trainer.devices", "2", "--trainer.logger", "CSVLogger"]
    command += ["--trainer.logger.save_dir", str(root), "--trainer.log_every_n_steps", "1"]
    command += ["--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the second rank too
        pytest.fail("DDP training did not finish in 300 s (a rank waiting on another?)")
    assert process.returncode == 0, stderr[-8000:]
    assert "Training on 2 processes" in stderr

    # 16 training images in batches of 4 on each of 2 processes: 2 steps an epoch.
    assert torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert (root / "export" / "open_clip_model.safetensors").is_file()
    # Validation ran to its end on both processes and logged its metrics.
    rows = list(csv.DictReader(next(root.rglob("metrics.csv")).open()))
    assert [r for r in rows if r.get("val/zeroshot_balanced_acc")]
    assert [r for r in rows if r.get("val/text_to_image_R@10")]


def test_cpu_training_precision_follows_the_model(monkeypatch):
    from skinclip.train import module

    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: True)
    assert module.default_precision() == "bf16-mixed"
    # SkinCLIP's convolutional tower trains faster in float32 even where bf16 is native.
    assert module.default_precision(cpu_bf16=False) == "32-true"
    monkeypatch.setattr(module, "cpu_has_native_bf16", lambda: False)
    assert module.default_precision() == "32-true"  # emulated bf16 is slower still


def test_resume_compares_only_settings_both_runs_know():
    from skinclip.train.cli import _changed_settings

    # YAML gives lists where the first run saved tuples; a setting added since is not compared.
    assert _changed_settings({"a": (1, 2), "b": 1}, {"a": [1, 2], "b": 1, "new": 3}) == []
    assert _changed_settings({"a": 1, "gone": 2}, {"a": 2}) == ["a: 1 -> 2"]
    assert _changed_settings({"shards": "x"}, {"shards": "y"}, frozenset({"shards"})) == []


def test_resume_check_names_a_damaged_checkpoint(tmp_path):
    from skinclip.model.towers import read_checkpoint
    from skinclip.train.cli import _read_resumed

    damaged = tmp_path / "last.ckpt"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=r"last.ckpt is not a readable checkpoint.*copy it again"):
        read_checkpoint(damaged)
    # Resuming, the user gave no file: the way out is to move it away.
    with pytest.raises(ValueError, match=r"Cannot resume: .*last.ckpt cannot be read.*move its"):
        _read_resumed(damaged)


def test_resume_finds_the_run_whether_its_folder_is_relative_or_absolute(
    tiny_shards, tmp_path, monkeypatch
):
    config = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    common = ["--config", str(config), "--data.shards", str(tiny_shards)]
    common += ["--data.num_workers", "0", "--data.batch_size", "4", "--model.image_size", "32"]
    common += ["--data.train_image_size", "32", "--model.pretrained_towers", "false"]
    common += ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    monkeypatch.chdir(tmp_path)
    run_training(["fit", *common, "--trainer.default_root_dir", "run", "--trainer.max_steps", "2"])
    absolute = ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", "last"]
    run_training(["fit", *common, *absolute, "--trainer.max_steps", "3"])
    checkpoints = tmp_path / "run" / "checkpoints"
    # Lightning would have saved the resumed run as last-v1.ckpt beside the first one's.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 3
