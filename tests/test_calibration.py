"""Temperature scaling: recovers a known temperature, keeps predictions, refuses misuse."""

import json

import pytest
import torch

from skinclip.eval.calibration import Temperature, fit_temperature, rescale
from skinclip.labels import get_label_set

ATLAS4 = get_label_set("atlas4")


def _sample(temperature: float, n: int = 4000, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, generator=gen) * 4
    targets = torch.multinomial((logits / temperature).softmax(1), 1, generator=gen).squeeze(1)
    return logits.softmax(1), targets


def test_fit_recovers_the_temperature_that_generated_the_labels():
    probs, targets = _sample(2.0)
    fitted = fit_temperature(probs, targets, "m", ATLAS4, "val")
    assert fitted.temperature == pytest.approx(2.0, rel=0.1)
    assert fitted.nll_after < fitted.nll_before
    assert torch.equal(fitted.apply(probs).argmax(1), probs.argmax(1))


def test_rescale_by_hand():
    probs = torch.tensor([[0.8, 0.2]])
    # logits log .8, log .2 halved -> odds sqrt(4) = 2 -> 2/3.
    assert rescale(probs, 2.0)[0, 0].item() == pytest.approx(2 / 3, abs=1e-6)


def test_refuses_test_split_and_other_models(tmp_path):
    probs, targets = _sample(1.0, n=50)
    with pytest.raises(ValueError, match="test split"):
        fit_temperature(probs, targets, "m", ATLAS4, "test")
    fitted = fit_temperature(probs, targets, "m", ATLAS4, "val")
    path = tmp_path / "t.json"
    fitted.save(path)
    loaded = Temperature.load(path)
    assert loaded == fitted
    with pytest.raises(ValueError, match="fitted for model 'm'"):
        loaded.check("other", ATLAS4)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a SkinCLIP calibration file"):
        Temperature.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="skinclip evaluate"):
        Temperature.load(tmp_path / "none.json")


def test_a_chance_level_model_gets_the_largest_temperature_and_keeps_its_ranking():
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(500, 4, generator=gen), dim=1)
    targets = torch.randint(0, 4, (500,), generator=gen)  # labels unrelated to the scores
    fitted = fit_temperature(probs, targets, "m", ATLAS4, "val")
    assert fitted.temperature == pytest.approx(100.0)
    assert torch.equal(fitted.apply(probs).argmax(1), probs.argmax(1))


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan"), "abc", True])
def test_temperature_must_be_positive_and_finite(tmp_path, value):
    fields = {
        "model_id": "m",
        "label_set": "s",
        "split": "val",
        "n": 1,
        "nll_before": 1.0,
        "nll_after": 1.0,
    }
    with pytest.raises(ValueError, match="positive finite"):
        Temperature(temperature=value, **fields)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"temperature": value, **fields}))
    with pytest.raises(ValueError, match="t.json is not a SkinCLIP calibration file"):
        Temperature.load(path)


def test_check_ties_the_temperature_to_weights_and_classes():
    from skinclip.labels import load_label_set

    probs, targets = _sample(1.0, n=50)
    nevus = load_label_set("nevus,melanoma")
    fitted = fit_temperature(probs, targets, "m", nevus, "val", model_checksum="abc")
    fitted.check("abc", load_label_set("nevus, melanoma"))  # same classes: accepted
    with pytest.raises(ValueError, match="Fit it again"):
        fitted.check("abc", load_label_set("bcc,lentigo"))  # also named "custom"
    with pytest.raises(ValueError, match="Fit it again"):
        fitted.check("other", nevus)
