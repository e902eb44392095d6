"""The explorer page's logic through Streamlit's AppTest, on a tiny model and index."""

import sys
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import app
from app import analysis, resources
from skinclip.labels import get_label_set

SCRIPT = str(Path(app.__file__).with_name("explorer.py"))


def _page(monkeypatch, files: dict, **overrides) -> AppTest:
    """Run the page with explorer arguments, the way `skinclip app` passes them."""
    argv = [SCRIPT]
    for name, value in {**files, **overrides}.items():
        argv += [f"--{name}", value]
    monkeypatch.setattr(sys, "argv", argv)
    page = AppTest.from_file(SCRIPT, default_timeout=120)
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    return page


def _texts(page: AppTest) -> str:
    parts = [m.value for m in page.markdown] + [e.value for e in page.error]
    parts += [w.value for w in page.warning] + [i.value for i in page.info]
    return "\n".join(parts + [s.value for s in page.success] + [c.value for c in page.caption])


def test_indexed_case_gets_diagnosis_concepts_neighbours_and_an_answer(monkeypatch, explorer_files):
    page = _page(monkeypatch, explorer_files)
    assert "Research tool, not a diagnostic device" in page.warning[0].value
    assert _texts(page).count(": ready") == 3

    page.radio(key="source").set_value("Pick an indexed case").run()
    case_id = page.selectbox(key="case").value
    key = page.selectbox(key="case-image").value

    # The page's diagnosis is the one computed directly from the same model and image.
    bundle = resources.load_skinclip(explorer_files["checkpoint"])
    index = resources.load_index(explorer_files["index"], bundle, "ckpt", "shards")
    images = resources.ShardImages(explorer_files["shards"])
    image = resources_image(images, key)
    embed = analysis.embed_image(bundle, image)
    expected = analysis.zero_shot(bundle, embed, get_label_set("atlas4"), "dermoscopic")
    text = _texts(page)
    assert f"Most likely: **{expected.top}** ({expected.probs[0]:.2f})" in text
    assert "Concept scores" in [h.value for h in page.subheader]

    # Neighbours: the case itself is indexed, so it is the best match for its own image.
    first = analysis.similar_cases(index, embed, 8)[0]
    assert first.case_id == case_id
    assert f"case `{case_id}`" in text

    page.text_input(key="question").set_value("What is the diagnosis?")
    page.button(key="ask-button").click().run()
    model = resources.load_skinvl(explorer_files["skinvl"])
    expected_answer = analysis.answer(model, image, "What is the diagnosis?")
    assert [s.value for s in page.success] == [
        f"SkinVL answered: {expected_answer or '(an empty answer)'}"
    ]

    page.text_input(key="question").set_value("   ")
    page.button(key="ask-button").click().run()
    assert any("question is empty" in e.value for e in page.error)

    page.slider(key="abst").set_value(1.0).run()
    assert "Abstained: the top class" in _texts(page)


def resources_image(images: resources.ShardImages, key: str) -> Image.Image:
    from app.inputs import read_upload

    return read_upload(images.get(key), key).image


def test_custom_labels_and_their_errors(monkeypatch, explorer_files, tmp_path):
    page = _page(monkeypatch, explorer_files)
    page.radio(key="source").set_value("Pick an indexed case").run()
    page.selectbox(key="labels").set_value("custom list").run()
    page.text_input(key="custom-labels").set_value("melanoma, nevus").run()
    assert "Most likely: **" in _texts(page)
    page.text_input(key="custom-labels").set_value("melanoma").run()
    assert any("Custom label list" in e.value for e in page.error)
    # Typed text is never opened as a file on the server, even when it looks like one.
    label_file = tmp_path / "secret.yaml"
    label_file.write_text("classes:\n  top secret: [a]\n  other: [b]\n")
    page.text_input(key="custom-labels").set_value(str(label_file)).run()
    assert any("at least two classes" in e.value for e in page.error)
    assert "top secret" not in _texts(page)


def test_text_search_and_browse(monkeypatch, explorer_files):
    page = _page(monkeypatch, explorer_files)
    page.text_input(key="query").set_value("melanoma on the back")
    page.button(key="search-button").click().run()
    bundle = resources.load_skinclip(explorer_files["checkpoint"])
    index = resources.load_index(explorer_files["index"], bundle, "ckpt", "shards")
    hits = analysis.text_cases(index, bundle, "melanoma on the back", 12)
    text = _texts(page)
    positions = [text.index(f"case `{hit.case_id}`") for hit in hits]
    assert positions == sorted(positions)  # shown in the index's ranking

    page.multiselect(key="search-modality").set_value(["clinical"]).run()
    assert "- dermoscopic -" not in _texts(page)

    assert "8 cases match." in _texts(page)  # the tiny index holds the 8 training cases
    page.multiselect(key="browse-diagnosis").set_value(["melanoma"]).run()
    assert "2 cases match." in _texts(page)
    case = page.selectbox(key="open-case").value
    assert f"Case {case}" in [h.value for h in page.subheader]
    assert "Nearest cases" in _texts(page)


def test_missing_pieces_say_what_to_run_and_the_rest_works(monkeypatch, explorer_files, tmp_path):
    page = _page(monkeypatch, explorer_files, skinvl=str(tmp_path / "none.ckpt"))
    page.radio(key="source").set_value("Pick an indexed case").run()
    text = _texts(page)
    assert "SkinVL is not loaded" in text and "Most likely: **" in text
    assert any("skinvl train --config configs/skinvl_align.yaml" in c.value for c in page.code)

    page = _page(monkeypatch, explorer_files, index=str(tmp_path / "no-index"))
    text = _texts(page)
    assert "case index is not loaded" in text
    # The fix names the configured paths, not the quickstart defaults.
    build = f"--checkpoint {explorer_files['checkpoint']} --out {tmp_path / 'no-index'}"
    assert any("skinclip index build" in c.value and build in c.value for c in page.code)
    assert page.radio(key="source").options == ["Upload an image"]

    page = _page(monkeypatch, explorer_files, checkpoint=str(tmp_path / "none.ckpt"))
    assert "SkinCLIP model is not loaded" in _texts(page)
    # The sidebar gives the reason: the index is there, but needs the missing model.
    assert "Case index**: not loaded (it needs the SkinCLIP model" in _texts(page)
    assert any("skinclip quickstart" in c.value for c in page.code)


def test_an_index_of_another_model_is_refused(monkeypatch, explorer_files, tmp_path):
    from skinclip.model.towers import create_skinclip, export_open_clip

    other = export_open_clip(create_skinclip(image_size=96), tmp_path / "other")
    page = _page(monkeypatch, explorer_files, checkpoint=str(other))
    assert "case index is not loaded" in _texts(page)
    assert any("rebuild it for this model" in c.value for c in page.code)


@pytest.mark.parametrize("argv", [["--max-upload-mb", "-1"], ["--config", "missing.yaml"]])
def test_bad_arguments_are_shown_on_the_page(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", [SCRIPT, *argv])
    page = AppTest.from_file(SCRIPT, default_timeout=60)
    page.run()
    assert not page.exception
    assert page.error[0].value.startswith("Bad explorer arguments")
