"""SkinVL's two training stages on the synthetic shards: what trains and what stays frozen."""

import json

import lightning as L
import pytest
import torch

from skinvl.data import QADataModule, sample_pair
from skinvl.module import SkinVLModule
from skinvl.qa import PHRASINGS


def _fit(stage: str, shards, tmp_path) -> tuple[SkinVLModule, dict]:
    module = SkinVLModule(stage=stage, projector="linear", image_size=64, total_steps=2)
    # Buffers too: the frozen encoder's BatchNorm running statistics must not move either.
    before = {n: p.detach().clone() for n, p in module.state_dict().items()}
    data = QADataModule(str(shards), stage=stage, image_size=64, batch_size=4, num_workers=0)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    return module, before


def _changed(module, before, prefix: str) -> bool:
    return any(
        not torch.equal(p.detach(), before[n])
        for n, p in module.state_dict().items()
        if n.startswith(prefix)
    )


def test_align_trains_the_projector_and_the_new_lm_head_only(tiny_shards, tmp_path):
    module, before = _fit("align", tiny_shards, tmp_path)
    assert _changed(module, before, "model.projector")
    # MiniLM's checkpoint has no LM-head transform: it starts random, so align must train it.
    head = "model.language_model.cls.predictions.transform."
    assert module.model.new_lm_weights >= {
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.LayerNorm.weight",
    }
    assert _changed(module, before, head)
    assert not _changed(module, before, "model.language_model.bert.")  # pretrained body frozen
    assert not _changed(module, before, "model.encoder")
    assert not module.model.language_model.training  # frozen body: no dropout


def test_instruct_trains_the_language_model_too(tiny_shards, tmp_path):
    module, before = _fit("instruct", tiny_shards, tmp_path)
    assert _changed(module, before, "model.projector")
    assert _changed(module, before, "model.language_model")
    assert not _changed(module, before, "model.encoder")


def test_pairs_per_stage():
    import random

    meta = {"diagnosis": "clark nevus", "modality": "clinical", "captions": ["A nevus."]}
    question, answer = sample_pair(meta, "align", random.Random(0))
    assert question in PHRASINGS["describe"] and answer == "A nevus."
    question, answer = sample_pair(meta, "instruct", random.Random(0))
    assert question and answer
    assert sample_pair({"modality": "clinical"}, "align", random.Random(0)) is None
    with pytest.raises(ValueError, match="stage must be one of"):
        QADataModule("x", stage="pretrain")


def test_cli_trains_resumes_and_answers(tiny_shards, tmp_path, make_image, capsys, caplog):
    import logging

    from skinvl.cli import main

    root = tmp_path / "run"
    args = [
        "train",
        "--model.stage",
        "align",
        "--model.projector",
        "linear",
        "--model.image_size",
        "64",
        "--model.total_steps",
        "2",
        "--data.shards",
        str(tiny_shards),
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
    ]
    assert main(args) == 0
    checkpoint = root / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    with caplog.at_level(logging.INFO):
        assert (
            main([*args[:-4], "--trainer.max_steps", "3", *args[-2:], "--ckpt_path", "last"]) == 0
        )
        assert torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"] == 3
    assert "Restored all states from the checkpoint" in caplog.text

    image = make_image("q.jpg", size=(64, 64))
    capsys.readouterr()  # drop the training summary tables
    assert (
        main(
            [
                "ask",
                str(image),
                "What is the diagnosis?",
                "Is a blue-whitish veil present?",
                "--checkpoint",
                str(checkpoint),
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "What is the diagnosis?",
        "Is a blue-whitish veil present?",
    ]
    with pytest.raises(SystemExit):
        main(["ask", str(image), "x", "--checkpoint", str(checkpoint), "--max-new-tokens", "0"])
    with caplog.at_level(logging.ERROR):
        assert main(["ask", str(image), "x", "--checkpoint", str(tmp_path / "no.ckpt")]) == 2
        assert main(["ask", str(tmp_path / "none.jpg"), "x", "--checkpoint", str(checkpoint)]) == 2
        assert main(["ask", str(image), "  ", "--checkpoint", str(checkpoint)]) == 2
        assert main(["ask", str(tmp_path), "x", "--checkpoint", str(checkpoint)]) == 2
        text_file = tmp_path / "notes.jpg"
        text_file.write_text("not a picture")
        assert main(["ask", str(text_file), "x", "--checkpoint", str(checkpoint)]) == 2
    assert "SkinVL checkpoint not found" in caplog.text
    assert "Image not found" in caplog.text
    assert "question is empty" in caplog.text
    assert (
        "is a folder" in caplog.text and "notes.jpg is not an image Pillow can read" in caplog.text
    )

    out = tmp_path / "eval"
    args = ["evaluate", str(tiny_shards), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main([*args, "--limit", "6", "--batch-size", "3"]) == 0
    report = json.loads((out / "skinvl_report.json").read_text())
    assert report["questions"] == 6
    assert report["skinclip_zeroshot_diagnosis"] is None  # a quick look has no baseline
    scored = sum(
        m["closed_questions"] + m["open_questions"]
        for name in ("skinvl", "blank_image")
        for m in report[name].values()
    )
    assert scored == 2 * 6  # every question is scored, closed or open, by both models
    records = [json.loads(line) for line in (out / "skinvl_answers.jsonl").open()]
    assert len(records) == 6 and {"question", "reference", "skinvl", "blank_image"} <= set(
        records[0]
    )

    from skinclip.model.towers import create_skinclip

    skinclip = tmp_path / "skinclip.pt"
    torch.save(create_skinclip(image_size=64).model.state_dict(), skinclip)
    assert main([*args, "--limit", "3", "--skinclip-checkpoint", str(skinclip)]) == 0
    baseline = json.loads((out / "skinvl_report.json").read_text())["skinclip_zeroshot_diagnosis"]
    assert baseline["images"] == 16 and baseline["checkpoint"] == str(skinclip)

    caplog.clear()
    with caplog.at_level(logging.ERROR):
        # Trained without a SkinCLIP checkpoint: the full report cannot name its baseline.
        assert main(args) == 2
        assert main([*args[:-1], str(image), "--limit", "3"]) == 2  # --out is a file
        assert main([*args[:3], str(skinclip), *args[4:]]) == 2  # not a SkinVL checkpoint
        assert main(["evaluate", str(tmp_path), *args[2:]]) == 2  # not a shard folder
        assert main(["evaluate", str(tiny_shards.parent), *args[2:]]) == 2  # one level up
    assert "pass --skinclip-checkpoint" in caplog.text
    assert "is a file" in caplog.text
    assert "is a SkinCLIP checkpoint, not a SkinVL checkpoint" in caplog.text
    assert "No manifest.json" in caplog.text
    assert f"did you mean {tiny_shards}?" in caplog.text


def test_mmskin_pairs_from_shards_are_used_as_given():
    import random

    meta = {"modality": "clinical", "qa": [{"question": "What is it?", "answer": "Psoriasis."}]}
    assert sample_pair(meta, "instruct", random.Random(0)) == ("What is it?", "Psoriasis.")


def test_train_names_missing_inputs_before_building_a_model(tiny_shards, tmp_path, caplog):
    import logging

    from skinvl.cli import main

    base = ["train", "--data.shards", str(tiny_shards), "--trainer.max_steps", "1"]
    base += ["--trainer.default_root_dir", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR):
        assert main([*base, "--model.init_from", str(tmp_path / "align.ckpt")]) == 2
        assert main([*base, "--model.skinclip_checkpoint", str(tmp_path / "clip.ckpt")]) == 2
        assert main([*base, "--data.shards", str(tmp_path)]) == 2
    assert "Stage-1 checkpoint not found" in caplog.text and "skinvl_align.yaml" in caplog.text
    assert "SkinCLIP checkpoint not found" in caplog.text and "skinclip quickstart" in caplog.text
    assert "No manifest.json in" in caplog.text
    assert not (tmp_path / "run").exists()  # nothing was started
    with caplog.at_level(logging.ERROR):
        assert main([*base, "--data.batch_size", "0"]) == 2
    assert "data.batch_size at least 1" in caplog.text


def test_resuming_from_a_damaged_checkpoint_says_what_to_do(tiny_shards, tmp_path, caplog):
    import logging

    from skinvl.cli import main

    damaged = tmp_path / "run" / "checkpoints" / "last.ckpt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"PK\x03\x04 cut short by a kill")
    args = ["train", "--model.stage", "align", "--model.projector", "linear"]
    args += ["--model.image_size", "64", "--data.shards", str(tiny_shards)]
    args += ["--data.num_workers", "0", "--trainer.max_steps", "1"]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", "last"]
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    assert "move its last.ckpt away" in caplog.text


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A two-layer Llama-family causal LM in a local folder, as a user's own LLM would be
    (random weights; the MiniLM tokenizer saved beside it, so no download is needed)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from skinvl.model import default_language_model_path

    folder = tmp_path_factory.mktemp("llama")
    tokenizer = AutoTokenizer.from_pretrained(str(default_language_model_path()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_another_causal_lm_with_lora_trains_only_the_adapters(tiny_shards, tiny_llama, tmp_path):
    pytest.importorskip("peft")
    from skinvl.model import generate

    module = SkinVLModule(
        language_model=tiny_llama, stage="instruct", projector="mlp", image_size=64,
        total_steps=2, lora_rank=4,
    )  # fmt: skip
    lm = module.model.language_model
    assert type(lm).__name__ == "PeftModelForCausalLM"
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # the base LLM stays frozen
    before = {n: p.detach().clone() for n, p in module.state_dict().items()}
    data = QADataModule(
        str(tiny_shards), stage="instruct", image_size=64, batch_size=4, num_workers=0
    )
    trainer = L.Trainer(
        max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    changed = {n for n, p in module.state_dict().items() if not torch.equal(p, before[n])}
    assert any("lora_" in n for n in changed) and any(
        n.startswith("model.projector") for n in changed
    )
    assert not any("language_model" in n and "lora_" not in n for n in changed)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    questions = ["What is it?", "Is it flat?"]
    answers = generate(module.model.eval(), images, questions, max_new_tokens=3)
    assert len(answers) == 2
    assert answers == generate(module.model, images, questions, max_new_tokens=3)
    # `skinvl ask` and `evaluate` load it back, adapters included, with the same answers.
    from skinvl.cli import load_trained

    trainer.save_checkpoint(tmp_path / "lora.ckpt")
    reloaded, image_size = load_trained(str(tmp_path / "lora.ckpt"))
    assert image_size == 64
    assert generate(reloaded, images, questions, max_new_tokens=3) == answers
