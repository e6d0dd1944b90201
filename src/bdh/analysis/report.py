"""`bdh analyze`: every analysis of one checkpoint (and optionally a baseline) to JSON + PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bdh.analysis.capture import (
    capture_activations,
    capture_mlp_activations,
    require_bdh_analyses,
)
from bdh.analysis.graph import GraphStats, model_graph_stats
from bdh.analysis.memory import measure_state_memory
from bdh.analysis.monosemantic import MonosemanticResult, monosemanticity
from bdh.analysis.sparsity import SparsityStats, sparsity_stats
from bdh.analysis.state import StateTrajectory, state_trajectory
from bdh.errors import BDHError
from bdh.registry import family_name
from bdh.tokenizers import Tokenizer

DEFAULT_LENGTHS = [64, 256, 1024, 4096]


def encode_prompt(tokenizer: Tokenizer, text: str, model: nn.Module) -> torch.Tensor:
    ids = tokenizer.encode(text)
    if not ids:
        raise BDHError("the text is empty: give at least one character")
    return torch.tensor([ids], device=next(model.parameters()).device)


def analyze_model(
    model: nn.Module,
    tokenizer: Tokenizer,
    text: str,
    baseline: nn.Module | None = None,
    groups: dict[str, list[str]] | None = None,
    layer: int = 0,
    head: int = 0,
    lengths: list[int] | None = None,
    synapses: bool = False,
) -> dict[str, Any]:
    """All analyses as plain Python objects (plus the raw results under "_raw")."""
    require_bdh_analyses(model, "the analysed model")
    idx = encode_prompt(tokenizer, text, model)
    acts = capture_activations(model, idx)
    sparsity = {name: sparsity_stats(acts[name]) for name in ("x", "y", "xy")}
    trajectory = state_trajectory(model, idx[0].tolist(), layer, head)
    graphs = [model_graph_stats(model, h) for h in range(model.config.n_head)]
    mono = monosemanticity(model, tokenizer, groups)
    mono_syn = monosemanticity(model, tokenizer, groups, unit="synapse") if synapses else None
    lengths = lengths or DEFAULT_LENGTHS
    result: dict[str, Any] = {
        "text": text,
        "tokens": idx.shape[1],
        "config": model.config.to_dict(),
        "sparsity": {name: s.to_dict() for name, s in sparsity.items()},
        "state": trajectory.to_dict(),
        "graph": [g.to_dict() for g in graphs],
        "monosemantic_neurons": mono.to_dict(),
        "memory": {"bdh": measure_state_memory(model, lengths)},
    }
    if mono_syn is not None:
        result["monosemantic_synapses"] = mono_syn.to_dict()
    raw: dict[str, Any] = {"sparsity": sparsity, "state": trajectory, "graph": graphs, "mono": mono}
    if baseline is not None:
        base_idx = encode_prompt(tokenizer, text, baseline)
        base_sparsity = sparsity_stats(capture_mlp_activations(baseline, base_idx))
        bdh_mlp = sparsity_stats(capture_mlp_activations(model, idx))
        result["baseline"] = {
            "model_type": family_name(baseline),
            "mlp_sparsity": base_sparsity.to_dict(),
        }
        result["sparsity"]["mlp"] = bdh_mlp.to_dict()
        result["memory"]["baseline"] = measure_state_memory(baseline, lengths)
        raw["baseline_sparsity"] = base_sparsity
        raw["mlp_sparsity"] = bdh_mlp
    result["_raw"] = raw
    return result


# ---- figures ---------------------------------------------------------------------------


def _save(fig: Any, path: Path) -> None:
    """Write a figure as every report figure is written, then free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sparsity(
    path: Path, sparsity: dict[str, SparsityStats], baseline: SparsityStats | None
) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    x = sparsity["x"]
    layers = np.arange(len(x.per_layer))
    width = 0.4 if baseline is not None else 0.8
    a.bar(
        layers - (width / 2 if baseline is not None else 0),
        100 * x.per_layer,
        width,
        label="BDH x_sparse",
    )
    if baseline is not None:
        a.bar(
            layers + width / 2,
            100 * baseline.per_layer[: len(layers)],
            width,
            label="Transformer MLP",
        )
    a.set_xticks(layers)
    a.set(xlabel="layer", ylabel="% units nonzero", title="Active units per layer", ylim=(0, 105))
    a.legend()
    centers = (x.bin_edges[:-1] + x.bin_edges[1:]) / 2
    b.bar(100 * centers, x.histogram, width=100 * (x.bin_edges[1] - x.bin_edges[0]))
    b.set(xlabel="% neurons active (one layer, head, token)", ylabel="count", title="Distribution")
    _save(fig, path)


def _plot_state(path: Path, traj: StateTrajectory) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.5))
    steps = np.arange(1, len(traj.tokens) + 1)
    for level in range(traj.norm.shape[1]):
        a.plot(steps, traj.norm[:, level].mean(axis=1), label=f"layer {level}")
        b.plot(steps, traj.eff_rank[:, level].mean(axis=1), label=f"layer {level}")
    a.set(xlabel="tokens read", ylabel="||rho||_F (mean over heads)", title="State norm")
    b.set(xlabel="tokens read", ylabel="effective rank", title="State effective rank")
    a.legend(fontsize=7)
    snap = traj.snapshots[-1]
    vmax = float(np.abs(snap).max()) or 1.0
    im = c.imshow(
        snap, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest"
    )
    c.set(
        xlabel="d", ylabel="neuron", title=f"rho, layer {traj.layer} head {traj.head}, last token"
    )
    fig.colorbar(im, ax=c)
    _save(fig, path)


def _plot_graph(path: Path, g: GraphStats) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 3.5))
    centers = (g.weight_bin_edges[:-1] + g.weight_bin_edges[1:]) / 2
    a.semilogy(centers, np.maximum(g.weight_histogram, 0.5), drawstyle="steps-mid")
    a.axvline(g.threshold, color="red", linestyle="--", label="edge threshold")
    a.set(xlabel="G[i, j]", ylabel="count", title="Weight distribution (head 0)")
    a.legend()
    degree = g.in_degree + g.out_degree
    b.hist(degree, bins=max(int(degree.max(initial=0)) + 1, 2))
    b.set(xlabel="degree (in + out)", ylabel="neurons", title=f"Degrees, {g.n_edges} edges")
    c.semilogy(g.singular_values)
    c.set(xlabel="index", ylabel="singular value", title="Spectrum of G")
    _save(fig, path)


def _plot_mono(path: Path, mono: MonosemanticResult) -> None:
    import matplotlib.pyplot as plt

    top = mono.top_units(20)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{'/'.join(map(str, u['index']))} {u['group']}" for u in top]
    ax.barh(range(len(top))[::-1], [-np.log10(max(u["p_value"], 1e-300)) for u in top])
    ax.axvline(-np.log10(mono.alpha), color="red", linestyle="--", label="Bonferroni 0.05")
    ax.set_yticks(range(len(top))[::-1], labels, fontsize=7)
    ax.set(
        xlabel="-log10 p (Mann-Whitney, in-group > others)",
        title="Most selective neurons (layer/head/neuron)",
    )
    ax.legend()
    _save(fig, path)


def _plot_memory(path: Path, memory: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, rows in memory.items():
        ax.plot(
            [r["tokens"] for r in rows], [r["used_bytes"] / 2**20 for r in rows], "o-", label=name
        )
    ax.set(
        xscale="log",
        xlabel="tokens read",
        ylabel="state / KV cache (MiB)",
        title="Measured inference state",
    )
    ax.legend()
    _save(fig, path)


def write_report(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write analysis.json and the PNG figures into out_dir; return the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = result["_raw"]
    data = {k: v for k, v in result.items() if k != "_raw"}
    paths = [out_dir / "analysis.json"]
    paths[0].write_text(json.dumps(data, indent=1) + "\n")
    figures = {
        "sparsity.png": lambda p: _plot_sparsity(p, raw["sparsity"], raw.get("baseline_sparsity")),
        "state.png": lambda p: _plot_state(p, raw["state"]),
        "graph.png": lambda p: _plot_graph(p, raw["graph"][0]),
        "monosemantic.png": lambda p: _plot_mono(p, raw["mono"]),
        "memory.png": lambda p: _plot_memory(p, result["memory"]),
    }
    for name, draw in figures.items():
        draw(out_dir / name)
        paths.append(out_dir / name)
    return paths
