"""Streamlit script of `bdh app` (run it through `bdh app`, or `streamlit run` this file
with BDH_APP_BDH / BDH_APP_BASELINE set; without them the default pair is used)."""

from __future__ import annotations

import os

import streamlit as st
import torch

from bdh.app import ENV_BASELINE, ENV_BDH, TAB_NAMES, ensure_default_pair
from bdh.app import views as v
from bdh.registry import family, family_name

DEFAULT_PROMPT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."
)
MAX_PROMPT_TOKENS = 192
VIEWS = [
    v.sparse_brain,
    v.memory_formation,
    v.monosemantic,
    v.graph_brain,
    v.walkthrough,
    v.memory_scaling,
    v.live_training,
]


@st.cache_resource(show_spinner=False)
def default_pair() -> tuple[str, str]:
    bar = st.progress(
        0.0, text="Training the default BDH and Transformer on tiny Shakespeare (once)..."
    )

    def progress(model: str, step: int, steps: int) -> None:
        bar.progress(
            min(step / steps, 1.0),
            text=f"Training the default {model} on tiny Shakespeare: step {step}/{steps}",
        )

    bdh, baseline = ensure_default_pair(on_progress=progress)
    bar.empty()
    return str(bdh), str(baseline)


def main() -> None:
    st.set_page_config(page_title="BDH Sparse Brain", layout="wide")
    # The views run many small ops on small models (a token-by-token state scan), where
    # thread hand-offs cost more than they gain: on a busy 2-core machine one BDH step
    # took 0.38 s with 2 threads and 0.7 ms with 1. BDH_APP_THREADS overrides.
    torch.set_num_threads(int(os.environ.get("BDH_APP_THREADS", "1")))
    bdh, baseline = os.environ.get(ENV_BDH), os.environ.get(ENV_BASELINE)
    if not bdh or not baseline:
        bdh, baseline = default_pair()
    model, tokenizer = v.load(bdh)
    v.load(baseline)
    if not family(model).bdh_analyses:
        st.error(
            f"{bdh} holds a {family_name(model)!r} model; the visualizer needs a BDH checkpoint."
        )
        st.stop()
    c = model.config
    with st.sidebar:
        st.markdown("### Input")
        text = st.text_area("Prompt", value=DEFAULT_PROMPT, height=140, key="prompt")
        ids = tokenizer.encode(text)
        if not ids:
            st.error("The prompt is empty.")
            st.stop()
        if len(ids) > MAX_PROMPT_TOKENS:
            text = tokenizer.decode(ids[:MAX_PROMPT_TOKENS])
            st.caption(f"Using the first {MAX_PROMPT_TOKENS} tokens.")
        layer = st.slider("Layer", 0, c.n_layer - 1, 0, key="layer")
        head = st.slider("Head", 0, c.n_head - 1, 0, key="head")
        st.caption(f"BDH: `{bdh}`  \nTransformer: `{baseline}`")
        st.caption(
            f"{c.n_layer} layers, {c.n_head} heads x {c.neurons_per_head} neurons, d = {c.n_embd}"
        )
    session = v.Session(bdh=bdh, baseline=baseline, text=text, layer=layer, head=head)
    st.title("BDH Sparse Brain")
    v.header_cards(session)
    for tab, view in zip(st.tabs(TAB_NAMES), VIEWS):
        with tab:
            view(session)
    st.divider()
    v.comparison(session)


main()
