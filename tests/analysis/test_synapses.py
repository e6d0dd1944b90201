"""The synapse readout sigma (Eq. 16): the model's own state update, brute force, and the
selectivity statistics on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdh.analysis.monosemantic import mann_whitney_test
from bdh.analysis.synapses import (
    degree_tail_stats,
    hebbian_sum,
    rank_units,
    synapse_activity,
    synapse_graph_stats,
)
from bdh.config import preset
from bdh.errors import BDHError
from bdh.model import BDH
from bdh.ops.rope import apply_rope_phasors
from bdh.registry import Probe


def fp64_bdh(damping=None, n_layer: int = 3) -> BDH:
    torch.manual_seed(0)
    config = preset(
        "tiny", n_layer=n_layer, n_embd=32, mlp_internal_dim_multiplier=8, damping=damping
    )
    return BDH(config).double().eval()


@pytest.mark.parametrize("damping", [None, [0.9, 0.8, 0.95, 0.7]])
def test_hebbian_sum_with_rope_keys_is_the_models_state(damping):
    """The weighting U^(T-1-tau) of `hebbian_sum` is the model's: with keys rope(x) and
    values the layer input it rebuilds rho of every layer after prefill (fp64)."""
    model = fp64_bdh(damping)
    idx = torch.randint(0, 256, (1, 23))
    xs, inputs = [], []
    handles = model.probe_points["x"].hook(model, lambda _m, out: xs.append(out))
    handles += Probe("attn", input=1).hook(model, lambda _m, v: inputs.append(v))
    with torch.no_grad():
        model(idx)
    for h in handles:
        h.remove()
    _, state = model.prefill(idx)
    phasors = model.attn.phasors(0, idx.shape[1])
    for layer in range(model.config.n_layer):
        keys = apply_rope_phasors(xs[layer], phasors)[0]  # H, T, N
        rho = hebbian_sum(keys, inputs[layer][0], model.attn.decay)
        torch.testing.assert_close(rho, state.kv[layer, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("damping", [None, [0.9, 0.8, 0.95, 0.7]])
def test_synapse_readout_equals_the_brute_force_sum(damping):
    """sigma_{t-1,l}[i, j] = sum_{tau<t} U^(t-1-tau) y_{tau,l-1}[i] x_{tau,l}[j], by explicit
    loops, for the whole text and for a prefix read on its own (causality of the indices)."""
    model = fp64_bdh(damping)
    ids = torch.randint(0, 256, (19,)).tolist()
    full = synapse_activity(model, ids)
    assert full.x.dtype == torch.float64
    H = model.config.n_head
    # The model's factors (its buffer holds them as fp32 values, widened by .double()).
    U = np.ones(H) if damping is None else model.attn.decay.numpy()
    for t in (len(ids), 7):
        readout = synapse_activity(model, ids[:t])
        for layer in range(1, model.config.n_layer):
            sigma = readout.synapses(layer).numpy()
            y, x = full.y[layer - 1].numpy(), full.x[layer].numpy()  # H, T, N
            for h in range(H):
                brute = np.zeros((y.shape[-1], x.shape[-1]))
                for tau in range(t):
                    brute += U[h] ** (t - 1 - tau) * np.outer(y[h, tau], x[h, tau])
                np.testing.assert_allclose(sigma[h], brute, rtol=1e-12, atol=1e-14)
                assert readout.synapse(layer, h, 3, 5) == pytest.approx(brute[3, 5], rel=1e-12)
    assert (full.synapses(1) >= 0).all()  # products of ReLU outputs
    with pytest.raises(BDHError, match="layer must be in"):
        full.synapses(0)


def test_graph_stats_of_the_readout_are_per_layer_from_one():
    model = fp64_bdh()
    stats = synapse_graph_stats(synapse_activity(model, list(range(40, 80))))
    assert [r["layer"] for r in stats["layers"]] == [1, 2]
    n = model.config.neurons_per_head
    for r in stats["layers"]:
        assert len(r["out_degrees"]) == len(r["in_degrees"]) == model.config.n_head * n
        assert sum(r["out_degrees"]) == sum(r["in_degrees"]) == r["n_edges"]


def test_degree_tail_stats_of_a_star_and_of_a_regular_graph():
    star = np.array([9] + [1] * 9)  # one hub linked to 9 leaves, both directions
    s = degree_tail_stats(star, n_nodes=10, n_edges=18, heads=1)
    assert s["max_degree"] == 9 and s["max_over_mean"] == pytest.approx(9 / 1.8)
    assert s["cv"] > s["erdos_renyi_cv"]
    regular = degree_tail_stats(np.full(10, 3), n_nodes=10, n_edges=30, heads=1)
    assert regular["cv"] == 0.0 and regular["top5pct_edge_share"] == pytest.approx(0.1)


def test_mann_whitney_test_known_answers():
    # Complete separation of 3 vs 3: U = 9 of 9, exact p = 1 / C(6, 3), r = 1.
    best = mann_whitney_test(np.array([4.0, 5.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert best.u == 9 and best.rank_biserial == 1.0
    assert best.p_value == pytest.approx(1 / 20)
    worst = mann_whitney_test(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
    assert worst.u == 0 and worst.rank_biserial == -1.0 and worst.p_value == pytest.approx(1.0)
    # The paper's currency synapse: U = 2368 of 2500 gives a rank-biserial r of 0.8944.
    inside = np.arange(50) + 0.5
    outside = np.concatenate([np.arange(47) - 10.0, [100.0, 101.0, 102.0]])
    t = mann_whitney_test(inside, outside)
    assert t.u == sum(int((outside < v).sum()) for v in inside)
    assert t.rank_biserial == pytest.approx(2 * t.u / 2500 - 1)
    with pytest.raises(BDHError):
        mann_whitney_test(np.array([]), np.array([1.0]))


def planted(
    rng: np.random.Generator, n: int = 100, units: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, units] of noise, column 17 shifted up on the first half of the rows."""
    features = rng.gamma(2.0, size=(n, units))
    labels = np.arange(n) < n // 2
    features[labels, 17] += 3.0
    return features, labels


def test_a_planted_selective_unit_is_picked_and_holds_on_held_out_rows():
    rng = np.random.default_rng(0)
    sel, sel_labels = planted(rng)
    test, test_labels = planted(rng)
    (column, p, effect), *_ = rank_units(sel, sel_labels, k=3)
    assert column == 17 and p < 1e-10 and effect > 1
    held = mann_whitney_test(test[test_labels, column], test[~test_labels, column])
    # The population value: P(X + 3 > Y) for X, Y ~ Gamma(2) gives r = 0.876 (2e6 draws);
    # 50 against 50 values put the sample within a few 0.05 of it.
    assert held.p_value < 1e-8 and abs(held.rank_biserial - 0.876) < 0.15


def test_the_label_shuffled_control_is_null():
    """Candidates chosen on shuffled labels do not hold on held-out rows with shuffled
    labels, while testing them on the rows they were chosen on (double dipping) would
    look significant."""
    rng = np.random.default_rng(1)
    held_out_p, dipped_p = [], []
    for _ in range(20):
        sel, labels = planted(rng)
        test, test_labels = planted(rng)
        sel_shuffled, test_shuffled = rng.permutation(labels), rng.permutation(test_labels)
        (column, _, _), *_ = rank_units(sel, sel_shuffled, k=1)
        held = mann_whitney_test(test[test_shuffled, column], test[~test_shuffled, column])
        dipped = mann_whitney_test(sel[sel_shuffled, column], sel[~sel_shuffled, column])
        held_out_p.append(held.p_value)
        dipped_p.append(dipped.p_value)
    assert np.mean(np.array(held_out_p) < 0.05) <= 0.15  # about the nominal 5%
    assert np.median(held_out_p) > 0.2
    # In-sample, the best of 300 noise columns always looks significant (p about 1/300).
    assert max(dipped_p) < 0.05 and np.median(dipped_p) < 0.01
