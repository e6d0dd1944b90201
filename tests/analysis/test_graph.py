from __future__ import annotations

import numpy as np
import pytest
import torch

from bdh.analysis import graph_stats, neuron_graph
from bdh.errors import BDHError

from .conftest import tiny_bdh


def test_two_disjoint_cliques_have_modularity_one_half():
    w = np.zeros((20, 20))
    w[:10, :10] = 1.0
    w[10:, 10:] = 1.0
    g = graph_stats(w, threshold=0.5, n_random=3)
    assert g.n_edges == 2 * 10 * 9  # directed, no self-loops
    assert g.modularity == pytest.approx(0.5)
    assert g.n_communities == 2
    # a random graph with the same nodes and edges is far less modular
    assert g.random_modularity_mean < 0.3
    assert (g.in_degree == 9).all() and (g.out_degree == 9).all()


def test_planted_communities_and_hub_in_heavy_tail():
    rng = np.random.default_rng(0)
    n, blocks = 120, 4
    w = rng.normal(size=(n, n))
    label = np.arange(n) // (n // blocks)
    same = label[:, None] == label[None, :]
    w[same & (rng.random((n, n)) < 0.1)] += 8.0  # strong within-block synapses
    w[7, :] += 8.0  # neuron 7 excites everyone: a hub
    g = graph_stats(w, k_sigma=3.0, n_random=3)
    assert g.tail_fraction > 10 * g.gaussian_tail_fraction
    assert g.weight_excess_kurtosis > 0
    assert g.hubs[0] == 7 and g.out_degree[7] >= n - 2
    assert g.modularity > g.random_modularity_mean + 0.2
    assert g.modularity > g.rewired_modularity_mean


def test_gaussian_weights_have_no_excess_tail():
    w = np.random.default_rng(1).normal(size=(300, 300))
    g = graph_stats(w, n_random=1)
    assert g.tail_fraction == pytest.approx(g.gaussian_tail_fraction, rel=0.3)
    assert abs(g.weight_excess_kurtosis) < 0.1


def test_neuron_graph_definition():
    model = tiny_bdh()
    c = model.config
    N, D = c.neurons_per_head, c.n_embd
    G1 = neuron_graph(model, 1)
    expected = model.decoder[N : 2 * N] @ model.encoder[1]
    assert G1.shape == (N, N)
    assert np.allclose(G1, expected.detach().numpy(), atol=1e-6)
    # rank <= D: the graph factors through the embedding
    assert np.linalg.matrix_rank(G1, tol=1e-6) <= D
    with pytest.raises(BDHError):
        neuron_graph(model, c.n_head)
    with pytest.raises(BDHError):
        graph_stats(torch.zeros(3, 4).numpy())
