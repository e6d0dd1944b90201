"""Streamlit AppTest drives every tab; its numbers must equal the analysis library's."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch

from bdh.analysis import (
    capture_activations,
    capture_mlp_activations,
    measure_state_memory,
    model_graph_stats,
    monosemanticity,
    sparsity_stats,
    state_trajectory,
)
from bdh.analysis.monosemantic import DEFAULT_CONCEPT_GROUPS
from bdh.app import MAIN_SCRIPT
from bdh.checkpoint import load_checkpoint

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from bdh.app.views import MEMORY_LENGTHS, kib, num, pct  # noqa: E402

PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"
TIMEOUT = 120


pytestmark = pytest.mark.usefixtures("single_thread")


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def streamlit_warnings():
    """Warnings Streamlit logs while the test runs (its loggers do not propagate)."""
    import streamlit.deprecation_util
    import streamlit.logger

    records = _Records()
    loggers = {streamlit.deprecation_util._LOGGER, *streamlit.logger._loggers.values()}
    for logger in loggers:
        logger.addHandler(records)
    yield records.messages
    for logger in loggers:
        logger.removeHandler(records)


@pytest.fixture
def app(app_env) -> AppTest:
    at = AppTest.from_file(str(MAIN_SCRIPT), default_timeout=TIMEOUT)
    at.run()
    at.sidebar.text_area(key="prompt").set_value(PROMPT)
    at.sidebar.slider(key="layer").set_value(1)
    at.sidebar.slider(key="head").set_value(1)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_tab_shows_the_library_numbers(app, app_env):
    at = app
    assert [t.label for t in at.tabs] == [
        "Sparse Brain", "Memory Formation", "Monosemantic Neurons", "Graph Brain",
        "3D Walkthrough", "Memory Scaling", "Live Training",
    ]  # fmt: skip
    bdh, tokenizer = load_checkpoint(app_env[0])
    gpt, _ = load_checkpoint(app_env[1])
    ids = tokenizer.encode(PROMPT)
    idx = torch.tensor([ids])
    got = metrics(at)

    # header cards and Sparse Brain
    acts = capture_activations(bdh, idx)
    x = sparsity_stats(acts["x"])
    tf = sparsity_stats(capture_mlp_activations(gpt, idx))
    assert got["BDH neurons active"] == pct(x.overall)
    assert got["Transformer MLP units active"] == pct(tf.overall)
    for i, rate in enumerate(x.per_layer):
        assert got[f"BDH layer {i} active"] == pct(rate)
    assert got["BDH x*y active"] == pct(sparsity_stats(acts["xy"]).overall)
    per_head = at.dataframe[0].value  # first table: active % per layer and head
    for h in range(bdh.config.n_head):
        assert per_head[f"head {h}"].tolist() == np.round(100 * x.per_head[:, h], 1).tolist()
    last = len(ids) - 1
    active_last = int((acts["x"][1, 0, 1, last] != 0).sum())
    assert (
        got[f"Active neurons at token {last}"] == f"{active_last} / {bdh.config.neurons_per_head}"
    )

    # Memory Formation (layer 1, head 1, after every token)
    traj = state_trajectory(bdh, ids, layer=1, head=1)
    T = len(ids)
    assert got[f"||rho|| after {T} tokens"] == num(float(traj.norm[-1, 1, 1]))
    assert got[f"Effective rank after {T} tokens"] == num(float(traj.eff_rank[-1, 1, 1]), 2)
    assert got["BDH state"] == got["State size (all layers)"] == kib(traj.nbytes)

    # Monosemantic neurons
    mono = monosemanticity(bdh, tokenizer, DEFAULT_CONCEPT_GROUPS)
    assert got["Selective neurons (Bonferroni 0.05)"] == str(
        sum(mono.significant_per_group.values())
    )
    assert got["Same test, shuffled labels"] == str(mono.significant_shuffled)
    assert got["Neurons tested"] == f"{mono.n_tested:,}"
    for name, count in mono.significant_per_group.items():
        assert got[f"{name}: selective"] == str(count)

    # Graph Brain (head 1)
    g = model_graph_stats(bdh, 1)
    assert got["Edges (head 1)"] == f"{g.n_edges:,}"
    assert got["Modularity (Louvain)"] == num(g.modularity)
    assert (
        got["Random graph, same size"]
        == f"{num(g.random_modularity_mean)} ± {num(g.random_modularity_std)}"
    )

    # 3D walkthrough (last token, head 1, every layer)
    on = int((acts["x"][:, 0, 1, last] != 0).sum())
    total = bdh.config.n_layer * bdh.config.neurons_per_head
    assert got[f"BDH active units at token {last}"] == f"{on:,} / {total:,}"

    # Memory Scaling and the KV-cache card
    for b, t in zip(
        measure_state_memory(bdh, MEMORY_LENGTHS), measure_state_memory(gpt, MEMORY_LENGTHS)
    ):
        assert got[f"{b['tokens']} tokens: BDH"] == kib(b["used_bytes"])
        assert got[f"{t['tokens']} tokens: Transformer"] == kib(t["used_bytes"])
    kv = measure_state_memory(gpt, [T])[0]
    assert got[f"Transformer KV cache ({T} tokens)"] == kib(kv["used_bytes"])


def test_the_app_renders_without_deprecation_warnings(app_env, streamlit_warnings, recwarn):
    at = AppTest.from_file(str(MAIN_SCRIPT), default_timeout=TIMEOUT)
    at.run()  # every tab's body runs in one script run
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.tabs) == 7
    assert not [m for m in streamlit_warnings if "deprecat" in m.lower() or "will be removed" in m]
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)
                and "streamlit" in str(w.filename)]  # fmt: skip


def test_sliders_and_groups_update_the_numbers(app, app_env):
    at = app
    bdh, tokenizer = load_checkpoint(app_env[0])
    ids = tokenizer.encode(PROMPT)
    at.slider(key="state_token").set_value(5).run()
    traj = state_trajectory(bdh, ids, layer=1, head=1)
    assert metrics(at)["||rho|| after 5 tokens"] == num(float(traj.norm[4, 1, 1]))
    groups = {"Kin": ["father", "mother", "son"], "Beasts": ["dog", "wolf", "bear"]}
    at.text_area(key="groups").set_value("Kin: father, mother, son\nBeasts: dog, wolf, bear").run()
    assert not at.exception
    mono = monosemanticity(bdh, tokenizer, groups)
    assert metrics(at)["Beasts: selective"] == str(mono.significant_per_group["Beasts"])
    at.text_area(key="groups").set_value("nonsense").run()
    assert not at.exception
    assert "Name: word, word" in at.error[0].value  # a malformed line is reported, not ignored


def test_live_training_starts_streams_and_stops(app, streamlit_warnings):
    at = app
    at.number_input(key="lt_steps").set_value(5000)
    at.number_input(key="lt_batch").set_value(2)
    at.number_input(key="lt_block").set_value(16)
    at.button(key="lt_start").click().run()
    assert not at.exception
    proc = at.session_state["lt_proc"]
    try:
        _stream_then_stop(at, at.session_state["lt_dir"])
    finally:
        if proc.poll() is None:  # the test failed before the app stopped it
            proc.kill()
    assert not [m for m in streamlit_warnings if "deprecat" in m.lower()]  # the loss chart too


def _stream_then_stop(at: AppTest, run_dir) -> None:
    path, deadline = run_dir / "metrics.jsonl", time.time() + 90
    while not (path.is_file() and "\n" in path.read_text()):  # one complete line
        assert time.time() < deadline, "the training run wrote no metrics"
        time.sleep(0.5)
    at.run()
    got = metrics(at)
    assert got["Run"] == "running"
    assert int(got["Step"].split(" / ")[0]) >= 1
    at.button(key="lt_stop").click().run()
    assert not at.exception
    assert metrics(at)["Run"].startswith("stopped")
    assert at.session_state["lt_proc"].returncode != 0
