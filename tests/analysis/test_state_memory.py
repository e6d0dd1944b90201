from __future__ import annotations

import pytest
import torch

from bdh.analysis import (
    effective_rank,
    measure_state_memory,
    numerical_rank,
    state_trajectory,
    tensor_nbytes,
)
from bdh.errors import BDHError

from .conftest import tiny_bdh


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_effective_rank_of_known_rank(rank):
    q_left, _ = torch.linalg.qr(torch.randn(20, 20))
    q_right, _ = torch.linalg.qr(torch.randn(12, 12))
    equal = q_left[:, :rank] @ q_right[:, :rank].T  # rank singular values, all 1
    assert float(effective_rank(equal)) == pytest.approx(rank, rel=1e-4)
    assert int(numerical_rank(equal)) == rank
    skewed = q_left[:, :rank] @ torch.diag(torch.logspace(0, -2, rank)) @ q_right[:, :rank].T
    assert int(numerical_rank(skewed)) == rank
    assert float(effective_rank(skewed)) < rank or rank == 1


def test_effective_rank_zero_matrix_and_batch():
    batch = torch.zeros(2, 3, 5, 4)
    batch[1, 2, 0, 0] = 3.0
    ranks = effective_rank(batch)
    assert ranks.shape == (2, 3)
    assert float(ranks[0, 0]) == 0.0 and float(ranks[1, 2]) == pytest.approx(1.0)


def test_state_trajectory_matches_prefill():
    model = tiny_bdh()
    ids = [5, 17, 99, 3, 42, 8]
    traj = state_trajectory(model, ids, layer=1, head=1)
    _, state = model.prefill(torch.tensor([ids]), model.init_state(1))
    c = model.config
    assert traj.snapshots.shape == (6, c.neurons_per_head, c.n_embd)
    assert torch.allclose(torch.from_numpy(traj.snapshots[-1]), state.kv[1, 0, 1], atol=1e-5)
    assert traj.norm.shape == (6, c.n_layer, c.n_head)
    assert traj.norm[-1, 1, 1] == pytest.approx(float(state.kv[1, 0, 1].norm()), rel=1e-5)
    # one token writes one outer product: the state has rank 1 after the first token
    assert traj.eff_rank[0].max() <= 1.0 + 1e-4
    assert traj.nbytes == c.n_layer * c.n_head * c.neurons_per_head * c.n_embd * 4
    with pytest.raises(BDHError):
        state_trajectory(model, [])
    with pytest.raises(BDHError):
        state_trajectory(model, ids, layer=9)


def test_bdh_state_is_constant_gpt_cache_grows():
    from bdh.baselines.gpt import GPT, GPTConfig

    bdh = tiny_bdh()
    rows = measure_state_memory(bdh, [8, 32, 96])
    c = bdh.config
    expected = c.n_layer * c.n_head * c.neurons_per_head * c.n_embd * 4
    assert [r["used_bytes"] for r in rows] == [expected] * 3
    assert tensor_nbytes(bdh.init_state(1)) == expected
    gpt = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=2, block_size=32)).eval()
    rows = measure_state_memory(gpt, [8, 32, 96])
    per_token = 2 * 2 * 32 * 4  # k and v, layers, n_embd, float32
    assert [r["used_bytes"] for r in rows] == [8 * per_token, 32 * per_token, 96 * per_token]
    assert [r["extended_context"] for r in rows] == [False, False, True]
    assert rows[0]["allocated_bytes"] == 32 * per_token  # preallocated to block_size
    assert [r["tokens"] for r in measure_state_memory(gpt, [8, 96], extend_context=False)] == [8]
