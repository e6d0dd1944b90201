"""The neuron-neuron graph of BDH-GPU and its structure.

In the paper's notation the encoder E (n -> d) and the decoder D_x (d -> n) factor a
neuron-neuron interaction graph G_x = E D_x of shape n x n. In this code base
(official naming) the roles are: `decoder` [H*N, D] maps the sparse neurons to the
embedding (the paper's E) and `encoder` [H, D, N] maps the embedding back to the
neurons of each head (the paper's D_x). For head h we define

    G_h[i, j] = sum_k decoder[h*N + i, k] * encoder[h, k, j]        (N x N)

the direct effect of neuron i's output (x*y of head h) on neuron j's pre-activation
in the next layer of head h, ignoring the LayerNorms. Edges are the heavy tail:
G_h[i, j] > mean + k * std of all entries of G_h, i != j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import nn

from bdh.analysis.capture import require_bdh_analyses
from bdh.errors import BDHError


@torch.no_grad()
def neuron_graph(model: nn.Module, head: int) -> np.ndarray:
    """G_h = decoder[h] @ encoder[h]: [N, N] for head `head` of a BDH model."""
    require_bdh_analyses(model, "the neuron graph's model")
    c = model.config
    if not 0 <= head < c.n_head:
        raise BDHError(f"head {head} out of range for {c.n_head} heads")
    N, D = c.neurons_per_head, c.n_embd
    dec = model.decoder.detach().float().view(c.n_head, N, D)[head]
    return (dec @ model.encoder.detach().float()[head]).cpu().numpy()


def _modularity(graph: nx.Graph, seed: int) -> tuple[float, int]:
    if graph.number_of_edges() == 0:
        return 0.0, graph.number_of_nodes()
    communities = nx.community.louvain_communities(graph, seed=seed)
    return float(nx.community.modularity(graph, communities)), len(communities)


@dataclass
class GraphStats:
    """Structure of the thresholded graph of one weight matrix.

    weight_*: moments of all entries; tail_fraction: share of entries above the
    threshold, gaussian_tail_fraction: the share a Gaussian would put there;
    in/out_degree [n]; hubs: nodes with the largest total degree; modularity of the
    Louvain partition of the undirected graph versus random graphs of equal size
    (Erdos-Renyi with the same node and edge counts, and degree-preserving rewiring).
    """

    n_nodes: int
    threshold: float
    n_edges: int
    density: float
    weight_mean: float
    weight_std: float
    weight_skew: float
    weight_excess_kurtosis: float
    tail_fraction: float
    gaussian_tail_fraction: float
    in_degree: np.ndarray
    out_degree: np.ndarray
    hubs: list[int]
    modularity: float
    n_communities: int
    random_modularity_mean: float
    random_modularity_std: float
    rewired_modularity_mean: float
    rewired_modularity_std: float
    singular_values: np.ndarray
    weight_histogram: np.ndarray
    weight_bin_edges: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_nodes": self.n_nodes,
            "threshold": self.threshold,
            "n_edges": self.n_edges,
            "density": self.density,
            "weight_mean": self.weight_mean,
            "weight_std": self.weight_std,
            "weight_skew": self.weight_skew,
            "weight_excess_kurtosis": self.weight_excess_kurtosis,
            "tail_fraction": self.tail_fraction,
            "gaussian_tail_fraction": self.gaussian_tail_fraction,
            "hubs": self.hubs,
            "hub_degrees": [int(self.in_degree[h] + self.out_degree[h]) for h in self.hubs],
            "max_out_degree": int(self.out_degree.max(initial=0)),
            "max_in_degree": int(self.in_degree.max(initial=0)),
            "modularity": self.modularity,
            "n_communities": self.n_communities,
            "random_modularity_mean": self.random_modularity_mean,
            "random_modularity_std": self.random_modularity_std,
            "rewired_modularity_mean": self.rewired_modularity_mean,
            "rewired_modularity_std": self.rewired_modularity_std,
            "singular_values": self.singular_values.tolist(),
            "weight_histogram": {
                "counts": self.weight_histogram.tolist(),
                "bin_edges": self.weight_bin_edges.tolist(),
            },
        }


def graph_stats(
    weights: np.ndarray,
    k_sigma: float = 3.0,
    threshold: float | None = None,
    n_random: int = 5,
    top_hubs: int = 10,
    seed: int = 0,
    bins: int = 60,
) -> GraphStats:
    """Analyse a square weight matrix [n, n] as a directed graph i -> j with weight w[i, j].

    Edges are entries above `threshold` (default mean + k_sigma * std), self-loops excluded.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise BDHError(f"a neuron graph must be a square matrix, got shape {w.shape}")
    n = w.shape[0]
    mean, std = float(w.mean()), float(w.std())
    z = (w - mean) / std if std > 0 else np.zeros_like(w)
    tau = mean + k_sigma * std if threshold is None else float(threshold)
    adj = w > tau
    np.fill_diagonal(adj, False)
    src, dst = np.nonzero(adj)
    directed = nx.DiGraph()
    directed.add_nodes_from(range(n))
    directed.add_edges_from(zip(src.tolist(), dst.tolist()))
    undirected = directed.to_undirected()
    out_degree, in_degree = adj.sum(axis=1), adj.sum(axis=0)
    total = in_degree + out_degree
    hubs = [int(i) for i in np.argsort(-total, kind="stable")[:top_hubs] if total[i] > 0]

    q, n_comm = _modularity(undirected, seed)
    m = undirected.number_of_edges()
    rand_q, rewired_q = [], []
    for r in range(n_random):
        rand_q.append(_modularity(nx.gnm_random_graph(n, m, seed=seed + r), seed)[0])
        rewired = undirected.copy()
        if m >= 2:
            try:
                nx.double_edge_swap(rewired, nswap=2 * m, max_tries=100 * m, seed=seed + r)
            except nx.NetworkXException:
                pass  # too few swappable edge pairs: keep what was rewired
        rewired_q.append(_modularity(rewired, seed)[0])
    hist, edges = np.histogram(w.ravel(), bins=bins)
    return GraphStats(
        n_nodes=n,
        threshold=tau,
        n_edges=int(adj.sum()),
        density=float(adj.sum()) / max(n * (n - 1), 1),
        weight_mean=mean,
        weight_std=std,
        weight_skew=float((z**3).mean()),
        weight_excess_kurtosis=float((z**4).mean() - 3.0),
        tail_fraction=float((w > tau).mean()),
        gaussian_tail_fraction=0.5 * math.erfc((tau - mean) / (std * math.sqrt(2)))
        if std > 0
        else 0.0,
        in_degree=in_degree,
        out_degree=out_degree,
        hubs=hubs,
        modularity=q,
        n_communities=n_comm,
        random_modularity_mean=float(np.mean(rand_q)) if rand_q else 0.0,
        random_modularity_std=float(np.std(rand_q)) if rand_q else 0.0,
        rewired_modularity_mean=float(np.mean(rewired_q)) if rewired_q else 0.0,
        rewired_modularity_std=float(np.std(rewired_q)) if rewired_q else 0.0,
        singular_values=np.linalg.svd(w, compute_uv=False),
        weight_histogram=hist,
        weight_bin_edges=edges,
    )


def model_graph_stats(model: nn.Module, head: int = 0, **kwargs: Any) -> GraphStats:
    """`graph_stats` of the neuron graph G_h of a BDH model."""
    return graph_stats(neuron_graph(model, head), **kwargs)
