"""The app's views. Each takes the loaded `Session` and draws one tab.

Heavy results come from `bdh.app.cache`; the live-training tab drives `bdh.app.live`.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from bdh.app import live
from bdh.app.cache import (
    bdh_activity,
    continuation,
    graph,
    load,
    memory,
    mlp_activity,
    mono,
    token_ids,
    trajectory,
)

BDH_COLOR, TF_COLOR = "#f97316", "#3b82f6"
MEMORY_LENGTHS = [64, 256, 1024, 4096]


# ---- formatting (the tests format library results with the same functions) ----------


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def kib(nbytes: float) -> str:
    return f"{nbytes / 1024:,.1f} KiB"


def num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


# ---- session ----------------------------------------------------------------------------


@dataclass
class Session:
    bdh: str
    baseline: str
    text: str
    layer: int
    head: int

    @property
    def config(self) -> Any:
        return load(self.bdh)[0].config


def _style(fig: go.Figure, title: str, height: int = 320) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=20, t=50, b=40))
    return fig


# ---- header -----------------------------------------------------------------------------


def header_cards(s: Session) -> None:
    bdh = bdh_activity(s.bdh, s.text)["sparsity"]["x"]
    tf = mlp_activity(s.baseline, s.text)["sparsity"]
    traj = trajectory(s.bdh, s.text, s.layer, s.head)
    kv = memory(s.baseline, (len(token_ids(s.bdh, s.text)),))[0]
    cols = st.columns(4)
    cols[0].metric("BDH neurons active", pct(bdh.overall), help="x_sparse nonzero, all layers")
    cols[1].metric("Transformer MLP units active", pct(tf.overall), help="GELU output nonzero")
    cols[2].metric("BDH state", kib(traj.nbytes), help="rho of all layers; fixed size")
    cols[3].metric(f"Transformer KV cache ({kv['tokens']} tokens)", kib(kv["used_bytes"]))


def comparison(s: Session) -> None:
    st.subheader("Same prompt, both models")
    new_tokens = st.slider("New tokens", 20, 200, 80, step=10, key="cmp_tokens")
    seed = st.number_input("Seed", value=0, step=1, key="cmp_seed")
    left, right = st.columns(2)
    for col, path, name in ((left, s.bdh, "BDH"), (right, s.baseline, "Transformer")):
        out = continuation(path, s.text, new_tokens, int(seed))
        col.markdown(f"**{name}** (loss on the prompt {num(out['prompt_loss'])} nats/token)")
        col.code(s.text[-200:] + out["text"], language=None)


# ---- 1. sparse brain --------------------------------------------------------------------


def sparse_brain(s: Session) -> None:
    activity = bdh_activity(s.bdh, s.text)
    x = activity["sparsity"]["x"]
    tf = mlp_activity(s.baseline, s.text)
    layers = [f"L{i}" for i in range(len(x.per_layer))]
    tf_layers = [f"L{i}" for i in range(len(tf["sparsity"].per_layer))]
    fig = go.Figure([
        go.Bar(x=layers, y=100 * x.per_layer, name="BDH x_sparse (ReLU)", marker_color=BDH_COLOR),
        go.Bar(x=tf_layers, y=100 * tf["sparsity"].per_layer, name="Transformer MLP (GELU)", marker_color=TF_COLOR),
    ])  # fmt: skip
    fig.update_yaxes(title="% units nonzero", range=[0, 105])
    st.plotly_chart(_style(fig, "Active units per layer"), width="stretch")
    cols = st.columns(len(layers))
    for i, col in enumerate(cols):
        col.metric(f"BDH layer {i} active", pct(x.per_layer[i]))
    c1, c2, c3 = st.columns(3)
    c1.metric("BDH y_sparse active", pct(activity["sparsity"]["y"].overall))
    c2.metric("BDH x*y active", pct(activity["sparsity"]["xy"].overall))
    c3.metric("BDH neurons silent on this prompt", pct(x.dead_fraction))
    st.caption("Active share of x_sparse per layer (rows) and head (columns), %:")
    st.dataframe(
        {f"head {h}": np.round(100 * x.per_head[:, h], 1) for h in range(x.per_head.shape[1])},
        width="stretch",
    )

    acts = activity["x"][s.layer, s.head]  # T, N
    left, right = st.columns(2)
    heat = go.Figure(go.Heatmap(z=acts.T, colorscale="Oranges"))
    heat.update_xaxes(title="token")
    heat.update_yaxes(title="neuron")
    left.plotly_chart(
        _style(heat, f"BDH x_sparse, layer {s.layer} head {s.head}", 380), width="stretch"
    )
    hidden = tf["hidden"][min(s.layer, tf["hidden"].shape[0] - 1)]  # T, W
    heat_tf = go.Figure(go.Heatmap(z=hidden.T, colorscale="Blues"))
    heat_tf.update_xaxes(title="token")
    heat_tf.update_yaxes(title="MLP unit")
    right.plotly_chart(_style(heat_tf, "Transformer MLP hidden (GELU)", 380), width="stretch")

    centers = 100 * (x.bin_edges[:-1] + x.bin_edges[1:]) / 2
    dist = go.Figure(go.Bar(x=centers, y=x.histogram, marker_color=BDH_COLOR))
    dist.update_xaxes(title="% neurons active in one (layer, head, token)")
    st.plotly_chart(_style(dist, "Distribution of activity", 280), width="stretch")

    st.markdown("#### Neuron inspector")
    ids = token_ids(s.bdh, s.text)
    _, tokenizer = load(s.bdh)
    t = st.slider("Token", 0, len(ids) - 1, len(ids) - 1, key="inspect_token")
    row = acts[t]
    active = np.flatnonzero(row)
    top = active[np.argsort(-row[active])][:10]
    st.metric(f"Active neurons at token {t}", f"{active.size} / {row.size}")
    st.caption(
        f"token {t} = {tokenizer.decode([ids[t]])!r}; strongest neurons of layer {s.layer}, head {s.head}:"
    )
    st.dataframe(
        {"neuron": top.tolist(), "activation": [float(row[i]) for i in top]},
        width="stretch", hide_index=True,
    )  # fmt: skip


# ---- 2. memory formation -----------------------------------------------------------------


def memory_formation(s: Session) -> None:
    traj = trajectory(s.bdh, s.text, s.layer, s.head)
    T = len(traj.tokens)
    _, tokenizer = load(s.bdh)
    t = st.slider("Tokens read", 1, T, T, key="state_token")
    snap = traj.snapshots[t - 1]
    c1, c2, c3 = st.columns(3)
    c1.metric(f"||rho|| after {t} tokens", num(float(traj.norm[t - 1, s.layer, s.head])))
    c2.metric(
        f"Effective rank after {t} tokens", num(float(traj.eff_rank[t - 1, s.layer, s.head]), 2)
    )
    c3.metric("State size (all layers)", kib(traj.nbytes))
    st.caption(f"rho = sum over tokens of rope(x_s)^T v_s, layer {s.layer} head {s.head}; "
               f"last token read: {tokenizer.decode([traj.tokens[t - 1]])!r}")  # fmt: skip
    vmax = float(np.abs(snap).max()) or 1.0
    heat = go.Figure(go.Heatmap(z=snap, colorscale="RdBu", zmid=0, zmin=-vmax, zmax=vmax))
    heat.update_xaxes(title="d (embedding)")
    heat.update_yaxes(title="neuron")
    st.plotly_chart(_style(heat, f"rho after {t} tokens", 420), width="stretch")
    steps = np.arange(1, T + 1)
    left, right = st.columns(2)
    norm = go.Figure(
        [
            go.Scatter(x=steps, y=traj.norm[:, i].mean(axis=1), name=f"layer {i}")
            for i in range(traj.norm.shape[1])
        ]
    )
    left.plotly_chart(_style(norm, "||rho||_F, mean over heads"), width="stretch")
    rank = go.Figure(
        [
            go.Scatter(x=steps, y=traj.eff_rank[:, i].mean(axis=1), name=f"layer {i}")
            for i in range(traj.eff_rank.shape[1])
        ]
    )
    right.plotly_chart(_style(rank, "Effective rank of rho, mean over heads"), width="stretch")


# ---- 3. monosemantic neurons ----------------------------------------------------------------


def monosemantic(s: Session) -> None:
    from bdh.analysis.monosemantic import DEFAULT_CONCEPT_GROUPS, format_groups

    text = st.text_area(
        "Concept groups (one per line: Name: word, word, ...)",
        value=format_groups(DEFAULT_CONCEPT_GROUPS), height=220, key="groups",
    )  # fmt: skip
    unit = st.radio("Units", ["neuron", "synapse"], horizontal=True, key="mono_unit",
                    help="neuron: x_sparse of every layer; synapse: entries of rho, last layer")  # fmt: skip
    from bdh.errors import BDHError

    try:
        result = mono(s.bdh, text, unit)
    except BDHError as err:
        st.error(str(err))
        return
    totals = result.to_dict()
    c1, c2, c3 = st.columns(3)
    c1.metric(f"Selective {unit}s (Bonferroni 0.05)", str(totals["significant_total"]))
    c2.metric("Same test, shuffled labels", str(totals["significant_with_shuffled_labels"]))
    c3.metric(f"{unit.capitalize()}s tested", f"{result.n_tested:,}")
    cols = st.columns(min(len(result.groups), 4))
    for i, name in enumerate(result.groups):
        cols[i % len(cols)].metric(f"{name}: selective", str(result.significant_per_group[name]))
    st.caption(
        f"One-sided Mann-Whitney U (group words > other words), corrected alpha {result.alpha:.2e}."
    )
    top = result.top_units(20)
    st.dataframe(
        {
            "unit": ["/".join(map(str, u["index"])) for u in top],
            "group": [u["group"] for u in top],
            "selectivity": [round(u["selectivity"], 3) for u in top],
            "p-value": [f"{u['p_value']:.2e}" for u in top],
            "significant": [u["significant"] for u in top],
        },
        width="stretch", hide_index=True,
    )  # fmt: skip
    if top:
        u = top[0]["unit"]
        bars = go.Figure(
            go.Bar(x=result.groups, y=result.group_means[:, u], marker_color=BDH_COLOR)
        )
        st.plotly_chart(
            _style(bars, f"Mean response of unit {'/'.join(map(str, top[0]['index']))} per group"),
            width="stretch",
        )


# ---- 4. graph brain -----------------------------------------------------------------------


def graph_brain(s: Session) -> None:
    g = graph(s.bdh, s.head)
    st.caption("G_h[i, j] = sum_k decoder[h*N+i, k] * encoder[h, k, j]: neuron i's direct effect on "
               "neuron j; edges are entries above mean + 3 std.")  # fmt: skip
    c = st.columns(4)
    c[0].metric(f"Edges (head {s.head})", f"{g.n_edges:,}")
    c[1].metric("Modularity (Louvain)", num(g.modularity))
    c[2].metric(
        "Random graph, same size",
        f"{num(g.random_modularity_mean)} ± {num(g.random_modularity_std)}",
    )
    c[3].metric(
        "Degree-preserving rewiring",
        f"{num(g.rewired_modularity_mean)} ± {num(g.rewired_modularity_std)}",
    )
    d = st.columns(3)
    d[0].metric(
        "Tail above threshold",
        f"{100 * g.tail_fraction:.3f}%",
        help=f"a Gaussian: {100 * g.gaussian_tail_fraction:.3f}%",
    )
    d[1].metric("Excess kurtosis of G", num(g.weight_excess_kurtosis))
    d[2].metric(
        "Top hub degree",
        str(int(g.in_degree[g.hubs[0]] + g.out_degree[g.hubs[0]])) if g.hubs else "0",
    )
    left, mid, right = st.columns(3)
    degree = g.in_degree + g.out_degree
    left.plotly_chart(
        _style(go.Figure(go.Histogram(x=degree, marker_color=BDH_COLOR)), "Degree (in + out)"),
        width="stretch",
    )
    centers = (g.weight_bin_edges[:-1] + g.weight_bin_edges[1:]) / 2
    weights = go.Figure(go.Bar(x=centers, y=g.weight_histogram, marker_color=BDH_COLOR))
    weights.add_vline(x=g.threshold, line_dash="dash", line_color="red")
    weights.update_yaxes(type="log")
    mid.plotly_chart(_style(weights, "Weights of G (log count)"), width="stretch")
    sv = go.Figure(
        go.Scatter(y=g.singular_values[: s.config.n_embd], mode="lines", line_color="#22c55e")
    )
    sv.update_yaxes(type="log")
    right.plotly_chart(_style(sv, "Singular values of G"), width="stretch")
    st.dataframe(
        {"hub neuron": g.hubs, "in-degree": [int(g.in_degree[h]) for h in g.hubs],
         "out-degree": [int(g.out_degree[h]) for h in g.hubs]},
        width="stretch", hide_index=True,
    )  # fmt: skip


# ---- 5. 3D walkthrough ----------------------------------------------------------------------


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    side = math.ceil(math.sqrt(n))
    return np.arange(n) % side, np.arange(n) // side


def walkthrough(s: Session) -> None:
    activity = bdh_activity(s.bdh, s.text)["x"][:, s.head]  # L, T, N
    hidden = mlp_activity(s.baseline, s.text)["hidden"]  # L, T, W
    T = activity.shape[1]
    t = st.slider("Token", 0, T - 1, T - 1, key="walk_token")
    left, right = st.columns(2)
    for col, acts, name, color in (
        (left, activity[:, t], "BDH", BDH_COLOR),
        (right, hidden[:, t], "Transformer", TF_COLOR),
    ):
        L, n = acts.shape
        gx, gy = _grid(n)
        on = acts != 0
        xs, ys, zs, sizes = [], [], [], []
        for level in range(L):
            xs.append(gx[on[level]])
            ys.append(gy[on[level]])
            zs.append(np.full(int(on[level].sum()), level))
            a = np.abs(acts[level][on[level]])
            sizes.append(2 + 8 * a / (a.max() if a.size and a.max() > 0 else 1))
        fig = go.Figure(go.Scatter3d(
            x=np.concatenate(xs), y=np.concatenate(ys), z=np.concatenate(zs), mode="markers",
            marker=dict(size=np.concatenate(sizes), color=color, opacity=0.7),
        ))  # fmt: skip
        fig.update_layout(scene=dict(zaxis_title="layer", xaxis_title="", yaxis_title=""))
        col.plotly_chart(_style(fig, f"{name}: active units at token {t}", 520), width="stretch")
        col.metric(f"{name} active units at token {t}", f"{int(on.sum()):,} / {on.size:,}")


# ---- 6. memory scaling ----------------------------------------------------------------------


def memory_scaling(s: Session) -> None:
    bdh_rows = memory(s.bdh, tuple(MEMORY_LENGTHS))
    tf_rows = memory(s.baseline, tuple(MEMORY_LENGTHS))
    fig = go.Figure([
        go.Scatter(x=[r["tokens"] for r in bdh_rows], y=[r["used_bytes"] / 2**20 for r in bdh_rows], name="BDH rho", line_color=BDH_COLOR),
        go.Scatter(x=[r["tokens"] for r in tf_rows], y=[r["used_bytes"] / 2**20 for r in tf_rows], name="Transformer KV cache (filled)", line_color=TF_COLOR),
    ])  # fmt: skip
    fig.update_xaxes(type="log", title="tokens read")
    fig.update_yaxes(title="MiB")
    st.plotly_chart(_style(fig, "Measured inference state, batch 1, float32"), width="stretch")
    cols = st.columns(len(MEMORY_LENGTHS))
    for col, b, t in zip(cols, bdh_rows, tf_rows):
        col.metric(f"{b['tokens']} tokens: BDH", kib(b["used_bytes"]))
        col.metric(f"{t['tokens']} tokens: Transformer", kib(t["used_bytes"]))
    st.caption(
        "Bytes of the tensors each model's prefill returns after reading that many random tokens. "
        "Beyond the Transformer's block size the same architecture is built with a longer context "
        "(extended: " + ", ".join(str(r["tokens"]) for r in tf_rows if r["extended_context"]) + ")."
    )
    st.dataframe({
        "tokens": [r["tokens"] for r in bdh_rows],
        "BDH bytes": [r["used_bytes"] for r in bdh_rows],
        "Transformer bytes (filled)": [r["used_bytes"] for r in tf_rows],
        "Transformer bytes (allocated)": [r["allocated_bytes"] for r in tf_rows],
    }, width="stretch", hide_index=True)  # fmt: skip


# ---- 7. live training -----------------------------------------------------------------------


def live_training(s: Session) -> None:
    from bdh.app import app_cache_dir

    state = st.session_state
    c = st.columns(4)
    model = c[0].selectbox("Model", ["bdh", "gpt"], key="lt_model")
    steps = c[1].number_input("Steps", 10, 5000, 200, step=10, key="lt_steps")
    batch = c[2].number_input("Batch size", 1, 64, 8, key="lt_batch")
    block = c[3].number_input("Block size", 16, 256, 64, step=16, key="lt_block")
    proc: subprocess.Popen | None = state.get("lt_proc")
    running = proc is not None and proc.poll() is None
    start, stop = st.columns(2)
    if start.button("Start training", disabled=running, type="primary", key="lt_start"):
        proc, run_dir, cmd = live.start_run(
            model, int(steps), int(batch), int(block), app_cache_dir() / "live"
        )
        state["lt_proc"], state["lt_dir"], state["lt_steps_total"], state["lt_cmd"] = (
            proc, run_dir, int(steps), cmd
        )  # fmt: skip
        running = True
    if stop.button("Stop (SIGTERM)", disabled=not running, key="lt_stop"):
        live.stop_run(state["lt_proc"])
        running = False
    if "lt_dir" not in state:
        st.info(
            "Start a run: `bdh train` in a subprocess on tiny Shakespeare; its metrics.jsonl streams here."
        )
        return
    st.caption("`" + " ".join(state["lt_cmd"][1:]) + "`")

    @st.fragment(run_every=1.0 if running else None)
    def progress() -> None:
        rows = live.run_metrics(state["lt_dir"])
        train_rows = [r for r in rows if "loss" in r]
        val_rows = [r for r in rows if "val_loss" in r]
        status = live.run_status(state.get("lt_proc"))
        last = train_rows[-1] if train_rows else {}
        m = st.columns(4)
        m[0].metric("Run", status)
        m[1].metric("Step", f"{last.get('step', 0)} / {state['lt_steps_total']}")
        m[2].metric("Train loss", num(last["loss"]) if last else "-")
        m[3].metric("Val loss", num(val_rows[-1]["val_loss"]) if val_rows else "-")
        st.progress(min(last.get("step", 0) / state["lt_steps_total"], 1.0))
        if train_rows:
            fig = go.Figure(
                go.Scatter(
                    x=[r["step"] for r in train_rows],
                    y=[r["loss"] for r in train_rows],
                    name="train",
                    line_color=BDH_COLOR,
                )
            )
            if val_rows:
                fig.add_trace(
                    go.Scatter(
                        x=[r["step"] for r in val_rows],
                        y=[r["val_loss"] for r in val_rows],
                        name="val",
                        mode="lines+markers",
                        line_color=TF_COLOR,
                    )
                )
            st.plotly_chart(_style(fig, "Loss (nats/token)"), width="stretch")
            if "tokens_per_s" in last:
                st.caption(
                    f"{last['tokens_per_s']:,.0f} tokens/s, {last.get('elapsed_s', 0):.0f} s elapsed"
                )

    progress()
