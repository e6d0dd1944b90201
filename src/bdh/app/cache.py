"""The app's cached computations: checkpoints and analysis results through Streamlit's
caches, keyed by the checkpoint paths and the inputs, so moving a slider does not
recompute them.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
import torch


@st.cache_resource(show_spinner="Loading checkpoint...")
def load(path: str) -> tuple[Any, Any]:
    from bdh.checkpoint import load_checkpoint

    return load_checkpoint(path, "cpu")


def token_ids(path: str, text: str) -> list[int]:
    _, tokenizer = load(path)
    return tokenizer.encode(text)


@st.cache_data(show_spinner="Capturing activations...", max_entries=16)
def bdh_activity(path: str, text: str) -> dict[str, Any]:
    from bdh.analysis import capture_activations, sparsity_stats

    model, _ = load(path)
    acts = capture_activations(model, torch.tensor([token_ids(path, text)]))
    return {
        "x": acts["x"][:, 0].numpy(),  # L, H, T, N
        "sparsity": {name: sparsity_stats(acts[name]) for name in ("x", "y", "xy")},
    }


@st.cache_data(show_spinner="Capturing Transformer activations...", max_entries=16)
def mlp_activity(path: str, text: str) -> dict[str, Any]:
    from bdh.analysis import capture_mlp_activations, sparsity_stats

    model, _ = load(path)
    hidden = capture_mlp_activations(model, torch.tensor([token_ids(path, text)]))
    return {"hidden": hidden[:, 0, 0].numpy(), "sparsity": sparsity_stats(hidden)}  # L, T, W


@st.cache_data(show_spinner="Reading the prompt token by token...", max_entries=16)
def trajectory(path: str, text: str, layer: int, head: int) -> Any:
    from bdh.analysis import state_trajectory

    model, _ = load(path)
    return state_trajectory(model, token_ids(path, text), layer, head)


@st.cache_data(show_spinner="Analysing the neuron graph...", max_entries=16)
def graph(path: str, head: int) -> Any:
    from bdh.analysis import model_graph_stats

    return model_graph_stats(load(path)[0], head)


@st.cache_data(show_spinner="Testing concept selectivity...", max_entries=8)
def mono(path: str, groups_text: str, unit: str) -> Any:
    from bdh.analysis import monosemanticity, parse_groups

    model, tokenizer = load(path)
    return monosemanticity(model, tokenizer, parse_groups(groups_text), unit=unit)


@st.cache_data(show_spinner="Measuring state memory...", max_entries=4)
def memory(path: str, lengths: tuple[int, ...]) -> list[dict[str, Any]]:
    from bdh.analysis import measure_state_memory

    return measure_state_memory(load(path)[0], list(lengths))


@st.cache_data(show_spinner="Generating...", max_entries=16)
def continuation(path: str, text: str, new_tokens: int, seed: int) -> dict[str, Any]:
    from bdh.analysis.memory import max_context
    from bdh.generate import SamplingConfig, generate_text

    model, tokenizer = load(path)
    ids = tokenizer.encode(text)
    limit = max_context(model)
    kept = ids if limit is None else ids[-max(limit - new_tokens, 1) :]
    prompt = tokenizer.decode(kept)
    window = torch.tensor([ids if limit is None else ids[:limit]])
    with torch.no_grad():
        loss = (
            float(model(window[:, :-1], window[:, 1:])[1]) if window.shape[1] > 1 else float("nan")
        )
    sampling = SamplingConfig(temperature=0.8, top_k=40)
    out = generate_text(model, tokenizer, [prompt], new_tokens, sampling, seed)[0]
    return {"text": out, "prompt_tokens": len(kept), "prompt_loss": loss}
