"""SkinVL answer metrics against hand computations."""

import math

import pytest

from skinvl.metrics import closed_accuracy, closed_answer, token_recall, tokens, vqa_scores


def test_token_recall_and_tokens():
    assert tokens("A blue-whitish veil, present!") == ["a", "blue-whitish", "veil", "present"]
    assert token_recall("the veil is blue", "blue veil present") == pytest.approx(2 / 3)
    assert token_recall("anything", "") == 0.0


def test_bleu_and_rouge_by_hand():
    scores = vqa_scores(["the cat sat"], ["the cat sat on"])
    # BLEU-1: precision 3/3, brevity penalty exp(1 - 4/3).
    assert scores["bleu1"] == pytest.approx(math.exp(1 - 4 / 3), abs=1e-4)
    # ROUGE-L: LCS 3, precision 3/3, recall 3/4 -> F = 6/7.
    assert scores["rougeL"] == pytest.approx(6 / 7, abs=1e-4)
    assert scores["token_recall"] == pytest.approx(3 / 4)
    perfect = vqa_scores(["melanoma in situ"], ["Melanoma in situ."])
    assert perfect["bleu1"] == pytest.approx(1.0) and perfect["rougeL"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="as many predictions"):
        vqa_scores(["a"], [])


def test_closed_answers_take_the_first_named_choice():
    choices = ["melanoma", "nevus", "seborrheic keratosis", "basal cell carcinoma"]
    assert closed_answer("It is a nevus, not a melanoma.", choices) == "nevus"
    assert closed_answer("melanomas everywhere", choices) is None  # whole words only
    assert closed_answer("Seborrheic keratosis.", choices) == "seborrheic keratosis"
    assert closed_accuracy(["yes", "no", "maybe"], ["yes", "yes", "no"], ["yes", "no"]) == 1 / 3


def test_score_answers_by_modality_and_kind():
    from skinvl.evaluate import score_answers
    from skinvl.qa import QAPair

    items = [
        (None, "dermoscopic", QAPair("diagnosis_group", "q", "nevus", True)),
        (None, "dermoscopic", QAPair("presence:streaks", "q", "yes", True)),
        (None, "dermoscopic", QAPair("presence:streaks", "q", "no", True)),
        (None, "clinical", QAPair("diagnosis_group", "q", "melanoma", True)),
        (None, "clinical", QAPair("site", "q", "Back.", False)),
        (None, "clinical", QAPair("modality", "q", "clinical", True)),
        (None, "clinical", QAPair("elevation", "q", "palpable", True)),
    ]
    answers = ["A nevus.", "yes", "yes", "nevus", "back", "A clinical photograph.", "flat"]
    result = score_answers(items, answers)
    derm = result["dermoscopic"]
    assert derm["closed"] == {"diagnosis_group": 1.0, "presence:streaks": 0.5}
    assert derm["closed_overall"] == pytest.approx(2 / 3) and derm["open"] is None
    clin = result["clinical"]
    assert clin["closed"] == {"diagnosis_group": 0.0, "modality": 1.0, "elevation": 0.0}
    assert clin["closed_overall"] == pytest.approx(1 / 3) and clin["open"]["token_recall"] == 1.0
    assert clin["closed_questions"] == 3 and clin["open_questions"] == 1
    assert clin["closed_lesion"] == 0.0  # modality left out
    assert derm["diagnosis_group_balanced"] == 1.0 and clin["diagnosis_group_balanced"] == 0.0


def test_balanced_accuracy_does_not_reward_the_commonest_answer():
    from skinvl.metrics import closed_balanced_accuracy

    choices = ["melanoma", "nevus"]
    always_nevus = ["nevus"] * 4
    references = ["nevus", "nevus", "nevus", "melanoma"]
    assert closed_accuracy(always_nevus, references, choices) == 0.75
    assert closed_balanced_accuracy(always_nevus, references, choices) == 0.5
    assert closed_balanced_accuracy(
        ["nevus", "no idea", "nevus", "melanoma"], references, choices
    ) == pytest.approx((2 / 3 + 1) / 2)


def test_answers_batched_by_kind_come_back_in_question_order(monkeypatch):
    import torch

    from skinvl import evaluate
    from skinvl.qa import QAPair

    seen_images = []

    def echo(model, images, questions, max_new_tokens):
        seen_images.append(images.clone())
        return [f"answer to {q}" for q in questions]

    monkeypatch.setattr(evaluate, "generate", echo)
    kinds = ["site", "diagnosis_group", "site", "presence:streaks", "diagnosis_group"]
    items = [
        (torch.full((3, 2, 2), float(i + 1)), "clinical", QAPair(kind, f"q{i}", "a", True))
        for i, kind in enumerate(kinds)
    ]
    answers = evaluate._answer(None, items, blank=False, max_new_tokens=4, batch=2)
    assert answers == [f"answer to q{i}" for i in range(5)]
    # Sorted by kind (diagnosis_group, presence, site) so batches share an answer length.
    assert [b[:, 0, 0, 0].tolist() for b in seen_images] == [[2.0, 5.0], [4.0, 1.0], [3.0]]
    seen_images.clear()
    evaluate._answer(None, items, blank=True, max_new_tokens=4, batch=8)
    assert torch.count_nonzero(seen_images[0]) == 0
