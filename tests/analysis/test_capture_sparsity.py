from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bdh.analysis import capture_activations, capture_mlp_activations, sparsity_stats
from bdh.errors import BDHError

from .conftest import tiny_bdh


def test_probes_map_to_layers():
    model = tiny_bdh()
    idx = torch.randint(256, (2, 9))
    acts = capture_activations(model, idx)
    c = model.config
    assert acts["x"].shape == (c.n_layer, 2, c.n_head, 9, c.neurons_per_head)
    assert acts["attn"].shape == (c.n_layer, 2, c.n_head, 9, c.n_embd)
    # Layer 0 input is LN(embed(idx)): its x_sparse is relu(x @ encoder).
    x0 = model.ln(model.embed(idx).unsqueeze(1))
    assert torch.allclose(acts["x"][0], F.relu(x0 @ model.encoder), atol=1e-6)
    assert torch.allclose(acts["xy"], acts["x"] * acts["y"], atol=1e-6)
    # Later layers see different inputs, so the per-layer split is not a repeat.
    assert not torch.allclose(acts["x"][0], acts["x"][1])


def test_capture_rejects_unknown_signal_and_non_bdh():
    with pytest.raises(BDHError):
        capture_activations(tiny_bdh(), torch.zeros(1, 3, dtype=torch.long), ("z",))
    with pytest.raises(BDHError):
        capture_activations(torch.nn.Linear(2, 2), torch.zeros(1, 3, dtype=torch.long))


def test_mlp_activations_of_gpt_are_dense():
    from bdh.baselines.gpt import GPT, GPTConfig

    gpt = GPT(GPTConfig(n_layer=3, n_embd=32, n_head=2, block_size=16)).eval()
    hidden = capture_mlp_activations(gpt, torch.randint(256, (1, 7)))
    assert hidden.shape == (3, 1, 1, 7, 128)
    assert sparsity_stats(hidden).overall > 0.99  # GELU is nonzero almost everywhere
    bdh_hidden = capture_mlp_activations(tiny_bdh(), torch.randint(256, (1, 7)))
    assert sparsity_stats(bdh_hidden).overall < 0.5


def test_sparsity_known_fractions():
    acts = torch.zeros(2, 1, 2, 4, 10)  # L, B, H, T, N
    acts[0, 0, 0, :, :5] = 1.0  # layer 0 head 0: half of the neurons on every token
    acts[1, 0, 1, 0, :] = 2.0  # layer 1 head 1: all neurons on token 0 only
    s = sparsity_stats(acts, bins=10)
    assert s.per_layer.tolist() == pytest.approx([0.25, 0.125])
    assert s.per_head.ravel().tolist() == pytest.approx([0.5, 0.0, 0.0, 0.25])
    assert s.per_token[1].tolist() == pytest.approx([0.5, 0, 0, 0])
    assert s.overall == pytest.approx(0.1875)
    assert s.histogram.sum() == 16
    assert s.histogram[0] == 11 and s.histogram[5] == 4 and s.histogram[-1] == 1
    # neurons 5..9 of layer 0 head 0 never fire, nor any of layer 0 head 1 / layer 1 head 0
    assert s.dead_fraction == pytest.approx((5 + 10 + 10) / 40)
