"""SkinVL: splicing visual tokens, label masking, encoder loading and one training step."""

import pytest
import torch

from skinvl.model import IGNORE, from_skinclip, splice


def test_splice_places_visual_tokens_and_masks_their_labels():
    ids = torch.tensor([[5, 9, 6, 7], [9, 5, 6, 0]])  # 9 is the placeholder
    embeds = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE, IGNORE, 6, 7], [IGNORE, IGNORE, 6, IGNORE]])
    visual = torch.full((2, 2, 3), -1.0)
    out, out_mask, out_labels = splice(embeds, ids, mask, labels, visual, image_token_id=9)
    assert out.shape == (2, 5, 3)
    assert torch.equal(out[0, 1:3], visual[0]) and torch.equal(out[1, 0:2], visual[1])
    assert torch.equal(out[0, 3], embeds[0, 2]) and torch.equal(out[1, 2], embeds[1, 1])
    assert out_labels.tolist() == [
        [IGNORE, IGNORE, IGNORE, 6, 7],
        [IGNORE, IGNORE, IGNORE, 6, IGNORE],
    ]
    assert out_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    with pytest.raises(ValueError, match="exactly one <image>"):
        splice(embeds, torch.zeros_like(ids), mask, labels, visual, image_token_id=9)


@pytest.fixture(scope="module")
def skinvl():
    return from_skinclip(None, projector="linear", image_size=64)


def test_labels_cover_only_the_answer(skinvl):
    batch = skinvl.encode_batch(["Is a veil present?"], ["yes"])
    answer = batch.input_ids[0][batch.labels[0] != IGNORE]
    assert skinvl.tokenizer.decode(answer[:-1]).strip() == "yes"
    assert (batch.input_ids[0] == skinvl.image_token_id).sum() == 1
    with pytest.raises(ValueError, match="question is empty"):
        skinvl.encode_batch(["  "], ["yes"])


def test_encoder_comes_from_the_skinclip_checkpoint(tmp_path):
    from skinclip.model.towers import create_skinclip

    clip = create_skinclip(image_size=64).model
    with torch.no_grad():
        clip.visual.trunk.conv_stem.weight.mul_(0.5)  # differs from the ImageNet weights
        clip.visual.head.proj.weight.normal_()  # and from the fixed-seed projection
    torch.save(clip.state_dict(), tmp_path / "skinclip.pt")
    vl = from_skinclip(str(tmp_path / "skinclip.pt"), projector="mlp", image_size=64)
    expected = clip.visual.state_dict()
    got = vl.encoder.state_dict()
    assert got.keys() == expected.keys()
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name
    # The leading visual token carries the SkinCLIP embedding itself.
    clip.eval()
    vl.encoder.eval()
    images = torch.randn(2, 3, 64, 64)
    spatial, embedding = vl.encoder(images)
    with torch.no_grad():
        reference = clip.encode_image(images, normalize=True)
    assert torch.allclose(embedding, reference, atol=1e-5)
    assert spatial.shape == (2, 4, vl.encoder.width)  # 2 x 2 feature map at 64 px
    assert vl.visual_tokens(images).shape == (2, 5, 384)
    with pytest.raises(FileNotFoundError):
        from_skinclip(str(tmp_path / "missing.pt"), image_size=64)


def test_one_training_step_lowers_the_loss(skinvl):
    skinvl.eval()  # no dropout, so the two losses are comparable
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    batch = skinvl.encode_batch(["What is the diagnosis?", "Is it flat?"], ["Nevus.", "flat"])
    optimizer = torch.optim.AdamW(skinvl.projector.parameters(), lr=1e-3)
    loss = skinvl(images, batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert skinvl(images, batch).loss < loss


def test_generation_is_batched_and_reproducible(skinvl):
    from skinvl.model import generate

    skinvl.eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    questions = ["What is the diagnosis?", "Is a blue-whitish veil present?"]
    greedy = generate(skinvl, images, questions, max_new_tokens=4)
    assert len(greedy) == 2 and greedy == generate(skinvl, images, questions, max_new_tokens=4)
    sample = generate(skinvl, images, questions, max_new_tokens=4, strategy="sample", seed=3)
    assert sample == generate(
        skinvl, images, questions, max_new_tokens=4, strategy="sample", seed=3
    )
    assert len(generate(skinvl, images, questions, max_new_tokens=3, strategy="beam")) == 2
    with pytest.raises(ValueError, match="question is empty"):
        generate(skinvl, images, ["", "x"])
    with pytest.raises(ValueError, match="strategy"):
        generate(skinvl, images, questions, strategy="nucleus")
    with pytest.raises(ValueError, match="list of strings"):
        generate(skinvl, images[:1], "What is it?")  # not four one-letter questions
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        generate(skinvl, images[0], questions[:1])
    with pytest.raises(ValueError, match="contains <image>"):
        generate(skinvl, images, ["<image> what?", "x"])
    with pytest.raises(ValueError, match="too long.*of the language model's 512 positions"):
        generate(skinvl, images, ["lesion " * 600, "x"], max_new_tokens=4)
    with pytest.raises(ValueError, match="leaving .* for the answer \\(600 asked for\\)"):
        generate(skinvl, images, questions, max_new_tokens=600)


def test_missing_language_model_is_a_clear_error(tmp_path):
    from skinvl.model import load_language_model

    with pytest.raises(FileNotFoundError, match="Language model .*nope.* not found"):
        load_language_model(tmp_path / "nope")


def test_a_qa_pair_longer_than_the_language_model_is_cut_not_fatal(skinvl, caplog):
    import logging

    skinvl.eval()
    images = torch.randn(2, 3, 64, 64)
    long_answer = "scaly erythematous plaque " * 250  # about 750 tokens; MiniLM has 512
    batch = skinvl.encode_batch(["Describe it.", "Is it flat?"], [long_answer, "flat"])
    with caplog.at_level(logging.WARNING, logger="skinvl.model"), torch.no_grad():
        loss = skinvl(images, batch).loss
    assert torch.isfinite(loss)
    assert "Cut 1 long Q/A pair(s) to the language model's 512 positions" in caplog.text
