"""The SkinCLIP case explorer page: ``skinclip app`` runs it with Streamlit.

Three tabs: ask about an image (zero-shot diagnosis, concepts, similar cases, SkinVL), search
by text, and browse the indexed cases. Each of the model, the index and SkinVL is loaded once
per server; a missing one is named with the command that builds it, and the rest works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from app import analysis, resources
from app.config import AppConfig, parse_config
from app.inputs import UploadError, read_upload
from skinclip.labels import builtin_names, label_list, load_label_set

NOTICE = (
    "Research tool, not a diagnostic device. Its outputs are not validated for clinical use "
    "and must not guide the care of a patient."
)
CUSTOM = "custom list"
PER_PAGE = 12


@st.cache_resource(show_spinner="Loading the SkinCLIP model...")
def skinclip_model(checkpoint: str):
    return resources.load_skinclip(checkpoint)


@st.cache_resource(show_spinner="Loading the case index...")
def case_index(folder: str, checkpoint: str, shards: str):
    return resources.load_index(folder, skinclip_model(checkpoint), checkpoint, shards)


@st.cache_resource(show_spinner="Loading SkinVL...")
def skinvl_model(checkpoint: str):
    return resources.load_skinvl(checkpoint)


@st.cache_resource(show_spinner="Reading the case images...")
def shard_images(folder: str) -> resources.ShardImages:
    return resources.ShardImages(folder)


def show_missing(piece: resources.Missing) -> None:
    st.info(f"**{piece.what} is not loaded**: {piece.reason}\n\nTo build it, run:")
    st.code(piece.fix, language="bash")


def item_image(item: dict, images: resources.ShardImages) -> bytes | None:
    """A case image by its index row: from the shards, or the file the index recorded."""
    data = images.get(item.get("key", ""))
    if data is None and item.get("image_path"):
        # The path comes from the index its operator built, never from the page's user.
        path = Path(item["image_path"])
        data = path.read_bytes() if path.is_file() else None
    return data


def show_hits(hits, images: resources.ShardImages, columns: int = 4) -> None:
    if not hits:
        st.write("No indexed case matches these filters.")
        return
    for start in range(0, len(hits), columns):
        for col, hit in zip(st.columns(columns), hits[start : start + columns], strict=False):
            item = hit.item
            with col:
                data = item_image(item, images)
                if data is not None:
                    st.image(data, width="stretch")
                else:
                    st.caption("(image not found in the shards)")
                st.markdown(
                    f"**{hit.rank}. {item.get('diagnosis')}** - similarity {hit.score:.3f}  \n"
                    f"{item.get('modality')} - {item.get('source')} - case `{hit.case_id}`"
                )
                st.caption(item.get("caption") or "")


def filter_widgets(index, key: str) -> dict:
    left, right = st.columns(2)
    modality = left.multiselect("Modality", index.field_values("modality"), key=f"{key}-modality")
    diagnosis = right.multiselect(
        "Diagnosis", index.field_values("diagnosis"), key=f"{key}-diagnosis"
    )
    return analysis.filters(modality, diagnosis)


def choose_label_set():
    names = [*builtin_names(), CUSTOM]
    choice = st.selectbox("Label set", names, index=names.index("atlas4"), key="labels")
    if choice != CUSTOM:
        return load_label_set(choice)
    spec = st.text_input(
        "Classes, separated by commas",
        "melanoma, nevus, seborrheic keratosis, basal cell carcinoma",
        key="custom-labels",
    )
    try:
        return label_list(spec)  # typed text is never a path on the server
    except ValueError as err:
        st.error(f"Custom label list: {err}")
        return None


def pick_image(index, images: resources.ShardImages, max_mb: float):
    """An uploaded or indexed image as (Upload, modality hint), or None."""
    sources = ["Upload an image"] + (["Pick an indexed case"] if index is not None else [])
    source = st.radio("Image", sources, horizontal=True, key="source")
    if source == "Upload an image":
        uploaded = st.file_uploader(
            f"Image of the lesion (JPEG, PNG, TIFF, BMP or WebP; at most {max_mb:g} MB)",
            key="upload",
        )
        if uploaded is None:
            return None
        return read_upload(uploaded.getvalue(), uploaded.name, max_mb), None
    case_id = st.selectbox("Case", index.case_ids, key="case")
    items = index.case_items(case_id)
    keys = [item["key"] for item in items]
    key = st.selectbox("Image of the case", keys, key="case-image")
    item = items[keys.index(key)]
    data = item_image(item, images)
    if data is None:
        raise UploadError(f"The image of {key} is not in the shards at {images.folder}.")
    return read_upload(data, key, max_mb), item.get("modality")


def ask_tab(config: AppConfig, bundle, index, skinvl, images) -> None:
    if isinstance(bundle, resources.Missing):
        show_missing(bundle)
        return
    try:
        picked = pick_image(
            None if isinstance(index, resources.Missing) else index, images, config.max_upload_mb
        )
    except UploadError as err:
        st.error(str(err))
        return
    if picked is None:
        st.write("Upload an image to see the zero-shot diagnosis, concepts and similar cases.")
        return
    upload, modality_hint = picked
    for note in upload.notes:
        st.caption(f"Image {note}.")
    modalities = list(analysis.MODALITIES)
    left, right = st.columns([1, 2])
    left.image(upload.image, caption=upload.name, width="stretch")
    with right:
        modality = st.selectbox(
            "Modality of the image",
            modalities,
            index=modalities.index(modality_hint) if modality_hint in modalities else 0,
            key="modality",
        )
        label_set = choose_label_set()
        threshold = st.slider("Abstain below top probability", 0.0, 1.0, 0.0, 0.05, key="abst")
    embed = analysis.embed_image(bundle, upload.image)
    if label_set is not None:
        result = analysis.zero_shot(bundle, embed, label_set, modality, threshold)
        st.subheader("Zero-shot diagnosis")
        if result.abstained:
            st.warning(
                f"Abstained: the top class ({result.names[0]}, {result.probs[0]:.2f}) is below "
                f"the threshold {threshold:.2f}."
            )
        else:
            st.write(f"Most likely: **{result.top}** ({result.probs[0]:.2f})")
        chart = pd.DataFrame({"probability": result.probs}, index=result.names)
        st.bar_chart(chart, horizontal=True, sort="-probability")
    concepts = analysis.concepts_for(bundle, embed, modality)
    if concepts:
        st.subheader("Concept scores")
        st.caption("Probability of each finding against a plain description of the image.")
        st.bar_chart(pd.DataFrame({"score": concepts}), horizontal=True)

    st.subheader("Similar textbook cases")
    if isinstance(index, resources.Missing):
        show_missing(index)
    else:
        where = filter_widgets(index, "similar")
        k = st.slider("Cases", 1, 24, 8, key="similar-k")
        show_hits(analysis.similar_cases(index, embed, k, where), images)

    st.subheader("Ask SkinVL")
    if isinstance(skinvl, resources.Missing):
        show_missing(skinvl)
        return
    with st.form("ask"):
        question = st.text_input("Question", "What is the diagnosis?", key="question")
        asked = st.form_submit_button("Ask", key="ask-button")
    if asked:
        try:
            reply = analysis.answer(skinvl, upload.image, question)
            st.success(f"SkinVL answered: {reply or '(an empty answer)'}")
        except ValueError as err:
            st.error(str(err))


def search_tab(bundle, index, images) -> None:
    for piece in (bundle, index):
        if isinstance(piece, resources.Missing):
            show_missing(piece)
            return
    with st.form("search"):
        query = st.text_input(
            "Describe what you are looking for",
            key="query",
            placeholder="blue-whitish veil on the back",
        )
        k = st.slider("Cases", 1, 48, 12, key="search-k")
        searched = st.form_submit_button("Search", key="search-button")
    where = filter_widgets(index, "search")
    if searched or query:
        try:
            show_hits(analysis.text_cases(index, bundle, query, k, where), images)
        except ValueError as err:
            st.error(str(err))


def browse_tab(index, images) -> None:
    if isinstance(index, resources.Missing):
        show_missing(index)
        return
    where = filter_widgets(index, "browse")
    ids, pages = analysis.browse_page(index, where, st.session_state.get("page", 1), PER_PAGE)
    st.number_input(f"Page (of {pages})", 1, pages, key="page")
    st.caption(f"{len(index.matching_cases(where or None))} cases match.")
    columns = st.columns(4)
    for i, case_id in enumerate(ids):
        item = index.case_items(case_id)[0]
        with columns[i % 4]:
            data = item_image(item, images)
            if data is not None:
                st.image(data, width="stretch")
            st.markdown(f"`{case_id}` - **{item.get('diagnosis')}**")
    if not ids:
        return
    case_id = st.selectbox("Open a case", ids, key="open-case")
    st.subheader(f"Case {case_id}")
    case_items = index.case_items(case_id)
    for col, item in zip(st.columns(len(case_items)), case_items, strict=True):
        with col:
            data = item_image(item, images)
            if data is not None:
                st.image(data, caption=item.get("modality"), width="stretch")
            st.caption(item.get("caption") or "")
    fields = {k: v for k, v in case_items[0].items() if k not in ("caption", "content", "key")}
    st.table(pd.DataFrame({"value": [str(v) for v in fields.values()]}, index=list(fields)))
    st.markdown("**Nearest cases**")
    show_hits(index.search_by_case(case_id, k=8), images)


def main(argv: list[str]) -> None:
    st.set_page_config(page_title="SkinCLIP case explorer", layout="wide")
    st.title("SkinCLIP case explorer")
    st.warning(NOTICE)
    try:
        config = parse_config(argv)
    except (FileNotFoundError, ValueError, SystemExit) as err:
        st.error(f"Bad explorer arguments: {err}")
        return
    bundle = skinclip_model(config.checkpoint)
    index = case_index(config.index, config.checkpoint, config.shards)
    skinvl = skinvl_model(config.skinvl)
    images = shard_images(config.shards)
    with st.sidebar:
        st.header("Loaded")
        for name, piece, path in (
            ("SkinCLIP", bundle, config.checkpoint),
            ("Case index", index, config.index),
            ("SkinVL", skinvl, config.skinvl),
        ):
            # "not loaded" with its reason: an index that exists but needs the missing model
            # must not read as missing itself.
            missing = isinstance(piece, resources.Missing)
            state = f"not loaded ({piece.reason})" if missing else "ready"
            st.markdown(f"**{name}**: {state}  \n`{path}`")
        st.markdown(f"**Case images**: {len(images)} in `{config.shards}`")
    ask, search, browse = st.tabs(["Ask about an image", "Search by text", "Browse cases"])
    with ask:
        ask_tab(config, bundle, index, skinvl, images)
    with search:
        search_tab(bundle, index, images)
    with browse:
        browse_tab(index, images)


main(sys.argv[1:])
