"""Neuron-neuron synapses read out of a text (paper §6.2-6.3, Eq. 16), and their structure.

BDH keeps its attention state per head as rho = sum_s U^(T-1-s) rope(x_s)^T v_s [N, D]
(v_s the layer's d-dimensional input). Read at the level of neurons, the same Hebbian sum
pairs the sparse output y of layer l-1 (in this code `x_sparse * y_sparse`, the `xy`
probe) with the sparse x of layer l:

    sigma_{t-1, l}[i, j] = sum_{tau < t} U^(t-1-tau) y_{tau, l-1}[i] x_{tau, l}[j]

per head (i of layer l-1, j of layer l, the same head), for layers l >= 1. The paper writes
the damping as U^(t-tau); here the exponents are the model's own (`bdh.ops.attention.damping`,
where the state read at token t holds U^(t-1-tau) of token tau), one constant factor U per
head apart, and identical without damping (U = 1). Both x and y are ReLU outputs, so
sigma is non-negative: its thresholded positive part is the thresholded matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bdh.analysis.capture import capture_activations, require_bdh_analyses
from bdh.analysis.graph import graph_stats
from bdh.analysis.monosemantic import mann_whitney_greater
from bdh.errors import BDHError


def decay_weights(decay: Tensor | None, length: int, heads: int, dtype: torch.dtype) -> Tensor:
    """[H, T]: U_h^(T-1-tau), how much of token tau's write the state holds after T tokens
    (ones without damping)."""
    if decay is None:
        return torch.ones(heads, length, dtype=dtype)
    exponents = torch.arange(length - 1, -1, -1, dtype=torch.float64)
    base = decay.detach().to(torch.float64).cpu().view(-1, 1).expand(heads, 1)
    return (base**exponents).to(dtype)


def hebbian_sum(pre: Tensor, post: Tensor, decay: Tensor | None = None) -> Tensor:
    """sum_tau U^(T-1-tau) pre_tau^T post_tau per head: pre [H or 1, T, P], post [H or 1,
    T, Q] -> [H, P, Q]. With pre = rope(x_sparse) and post = the layer input this is the
    model's state rho after T tokens; with pre = y of layer l-1, post = x of layer l, the
    synapses sigma."""
    heads, length = max(pre.shape[0], post.shape[0]), pre.shape[1]
    w = decay_weights(decay, length, heads, pre.dtype)
    return torch.einsum("ht,htp,htq->hpq", w, pre.expand(heads, -1, -1), post.expand(heads, -1, -1))


@dataclass
class SynapseActivity:
    """What the synapses of one text are built from: y [L, H, T, N] (the xy probe) and
    x [L, H, T, N] (x_sparse) of each layer, and the damping U [H] (None: off)."""

    y: Tensor
    x: Tensor
    decay: Tensor | None

    @property
    def n_layer(self) -> int:
        return self.x.shape[0]

    def synapses(self, layer: int, head: int | None = None, rows: slice = slice(None)) -> Tensor:
        """sigma of `layer` (>= 1) after the whole text: [H, N, N] (or [N, N] of one head),
        pre-synaptic rows `rows` only when given."""
        if not 1 <= layer < self.n_layer:
            raise BDHError(f"synapses link layer l-1 to l: layer must be in 1..{self.n_layer - 1}")
        pre, post = self.y[layer - 1][:, :, rows], self.x[layer]
        if head is None:
            return hebbian_sum(pre, post, self.decay)
        decay = (
            None
            if self.decay is None
            else self.decay.view(-1).expand(pre.shape[0])[head : head + 1]
        )
        return hebbian_sum(pre[head : head + 1], post[head : head + 1], decay)[0]

    def synapse(self, layer: int, head: int, i: int, j: int) -> float:
        """One entry sigma[layer, head][i, j]."""
        return float(self.synapses(layer, head, slice(i, i + 1))[0, j])


@torch.no_grad()
def synapse_activity(model: nn.Module, ids: list[int] | Tensor) -> SynapseActivity:
    """Run one text (token ids [T]) through a BDH model and keep what sigma needs."""
    require_bdh_analyses(model, "the synapse readout's model")
    idx = torch.as_tensor(ids, device=next(model.parameters()).device).view(1, -1)
    if idx.shape[1] == 0:
        raise BDHError("the synapse readout needs at least one token")
    acts = capture_activations(model, idx, ("x", "xy"))
    decay = model.attn.decay
    return SynapseActivity(
        y=acts["xy"][:, 0], x=acts["x"][:, 0], decay=None if decay is None else decay.detach().cpu()
    )


# ---- degree distribution (paper Fig. 11) ----------------------------------------------


def degree_tail_stats(
    degrees: np.ndarray, n_nodes: int, n_edges: int, heads: int
) -> dict[str, Any]:
    """Heavy-tail statistics of the degrees of `heads` graphs of `n_nodes` nodes holding
    `n_edges` edges in all, against an Erdos-Renyi graph of the same density (whose
    degrees are binomial): coefficient of variation, max / mean, and the share of edges
    held by the top 5% of nodes."""
    degrees = np.asarray(degrees, dtype=np.float64)
    mean = float(degrees.mean()) if degrees.size else 0.0
    p = n_edges / max(heads * n_nodes * (n_nodes - 1), 1)
    m = n_nodes - 1
    er_cv = float(np.sqrt((1 - p) / (m * p))) if 0 < p < 1 else 0.0
    top = np.sort(degrees)[::-1][: max(1, int(round(0.05 * degrees.size)))]
    return {
        "mean_degree": mean,
        "max_degree": int(degrees.max(initial=0)),
        "max_over_mean": float(degrees.max(initial=0) / mean) if mean > 0 else 0.0,
        "cv": float(degrees.std() / mean) if mean > 0 else 0.0,
        "erdos_renyi_cv": er_cv,
        "top5pct_edge_share": float(top.sum() / degrees.sum()) if degrees.sum() > 0 else 0.0,
        "zero_degree_fraction": float((degrees == 0).mean()) if degrees.size else 0.0,
    }


def synapse_graph_stats(activity: SynapseActivity, k_sigma: float = 3.0) -> dict[str, Any]:
    """Per layer (>= 1): the thresholded sigma of each head as a directed graph (pre i ->
    post j; edges above mean + k_sigma std of that head's matrix, `graph.graph_stats`),
    its out/in degrees pooled over heads and their tail statistics."""
    layers = []
    for layer in range(1, activity.n_layer):
        sigma = activity.synapses(layer).double().numpy()  # H, N, N
        stats = [graph_stats(s, k_sigma=k_sigma, n_random=1) for s in sigma]
        out_deg = np.concatenate([g.out_degree for g in stats])
        in_deg = np.concatenate([g.in_degree for g in stats])
        n, edges = sigma.shape[-1], int(sum(g.n_edges for g in stats))
        layers.append({
            "layer": layer,
            "heads": len(stats),
            "nodes_per_head": n,
            "n_edges": edges,
            "density": edges / (len(stats) * n * (n - 1)),
            "nonzero_fraction": float((sigma > 0).mean()),
            "weight_skew": float(np.mean([g.weight_skew for g in stats])),
            "weight_excess_kurtosis": float(np.mean([g.weight_excess_kurtosis for g in stats])),
            "tail_fraction": float(np.mean([g.tail_fraction for g in stats])),
            "gaussian_tail_fraction": float(np.mean([g.gaussian_tail_fraction for g in stats])),
            "modularity": float(np.mean([g.modularity for g in stats])),
            "random_modularity": float(np.mean([g.random_modularity_mean for g in stats])),
            "out_degree": degree_tail_stats(out_deg, n, edges, len(stats)),
            "in_degree": degree_tail_stats(in_deg, n, edges, len(stats)),
            "out_degrees": out_deg.astype(int).tolist(),
            "in_degrees": in_deg.astype(int).tolist(),
        })  # fmt: skip
    return {"k_sigma": k_sigma, "layers": layers}


# ---- selectivity: candidates on one split, the test on another ------------------------


@dataclass
class Candidate:
    """A synapse (layer, head, i, j) picked on the selection split, with its selection
    p-value (normal approximation) and standardized mean difference."""

    layer: int
    head: int
    i: int
    j: int
    selection_p: float
    selection_effect: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "synapse": [self.layer, self.head, self.i, self.j],
            "selection_p": self.selection_p,
            "selection_effect": self.selection_effect,
        }


def rank_units(features: np.ndarray, inside: np.ndarray, k: int) -> list[tuple[int, float, float]]:
    """The k columns of features [W, U] most selective for rows `inside` (smallest one-sided
    Mann-Whitney p, ties broken by the larger standardized mean difference); returns
    (column, p, effect)."""
    inside = np.asarray(inside, bool)
    p = mann_whitney_greater(features, inside)
    a, b = features[inside], features[~inside]
    spread = np.sqrt((a.var(axis=0) + b.var(axis=0)) / 2)
    effect = np.divide(a.mean(axis=0) - b.mean(axis=0), spread, out=np.zeros(features.shape[1]),
                       where=spread > 0)  # fmt: skip
    order = np.lexsort((-effect, p))[:k]
    return [(int(u), float(p[u]), float(effect[u])) for u in order]


def synapse_blocks(
    activities: list[SynapseActivity], max_values: int = 1 << 24
) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """(layer, head, first row, features [W, rows * N]) over every synapse of every layer
    >= 1 and head, one value per text, at most `max_values` values per block."""
    first = activities[0]
    L, H, _, N = first.x.shape
    rows = max(1, min(N, max_values // max(1, len(activities) * N)))
    for layer in range(1, L):
        for head in range(H):
            for start in range(0, N, rows):
                chunk = slice(start, min(N, start + rows))
                block = torch.stack([a.synapses(layer, head, chunk) for a in activities])
                yield layer, head, start, block.reshape(len(activities), -1).double().numpy()


def select_candidates(
    activities: list[SynapseActivity], inside: np.ndarray, k: int
) -> list[Candidate]:
    """The k synapses most selective for the texts `inside` among all of them."""
    N = activities[0].x.shape[-1]
    found: list[Candidate] = []
    for layer, head, start, block in synapse_blocks(activities):
        for column, p, effect in rank_units(block, inside, k):
            i, j = divmod(column, N)
            found.append(Candidate(layer, head, start + i, j, p, effect))
    found.sort(key=lambda c: (c.selection_p, -c.selection_effect))
    return found[:k]
