"""The parallel, chunked and recurrent forms of BDH compute the same thing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bdh
from bdh.ops.attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_naive,
    causal_linear_attention_recurrent,
)
from tests.conftest import require_cpp_kernel

FP32_RTOL = 1e-5


def _random_config(draw_layers: int, heads: int, embd: int, mult: int) -> bdh.BDHConfig:
    return bdh.BDHConfig(
        n_layer=draw_layers, n_embd=embd, n_head=heads, mlp_internal_dim_multiplier=mult, dropout=0.0
    )


def _step_by_step(model: bdh.BDH, idx: torch.Tensor, prefix: int) -> torch.Tensor:
    """Logits at every position: prefill `prefix` tokens, then one step per token."""
    state = model.init_state(idx.shape[0])
    pieces = []
    if prefix:
        logits, state = model.prefill(idx[:, :prefix], state)
        pieces.append(logits)
    for t in range(prefix, idx.shape[1]):
        logits, state = model.step(idx[:, t], state)
        pieces.append(logits[:, None])
    assert state.position == idx.shape[1]
    return torch.cat(pieces, dim=1)


@settings(max_examples=12, deadline=None)
@given(
    layers=st.integers(1, 3),
    heads=st.sampled_from([1, 2, 4]),
    embd=st.sampled_from([16, 32]),
    mult=st.sampled_from([4, 8]),
    T=st.integers(1, 40),
    prefix_frac=st.floats(0, 1),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_recurrent_equals_parallel_fp64(layers, heads, embd, mult, T, prefix_frac, batch, seed) -> None:
    torch.manual_seed(seed)
    model = bdh.BDH(_random_config(layers, heads, embd, mult)).double().eval()
    idx = torch.randint(0, 256, (batch, T))
    parallel, _ = model(idx)
    recurrent = _step_by_step(model, idx, prefix=int(prefix_frac * T))
    torch.testing.assert_close(recurrent, parallel, rtol=0, atol=1e-9)


@pytest.mark.parametrize("prefix", [0, 1, 100, 199])
def test_recurrent_equals_parallel_fp32(prefix: int) -> None:
    model = bdh.BDH(bdh.preset("tiny")).eval()
    idx = torch.randint(0, 256, (2, 200))
    parallel, _ = model(idx)
    recurrent = _step_by_step(model, idx, prefix)
    err = (recurrent - parallel).abs().max() / parallel.abs().max()
    assert err < FP32_RTOL


def test_long_prefill_in_chunks_equals_parallel(monkeypatch) -> None:
    """Prompts longer than the prefill chunk are consumed chunk by chunk, same logits."""
    import bdh.model

    monkeypatch.setattr(bdh.model, "PREFILL_CHUNK", 64)
    model = bdh.BDH(_random_config(2, 2, 16, 8)).double().eval()
    idx = torch.randint(0, 256, (1, 300))
    parallel, _ = model(idx)
    prefilled, state = model.prefill(idx)
    torch.testing.assert_close(prefilled, parallel, rtol=0, atol=1e-9)
    last, _ = model.prefill(idx[:, :10], model.init_state(1), all_logits=False)
    torch.testing.assert_close(last, parallel[:, 9], rtol=0, atol=1e-9)


def test_decoding_through_the_cpu_kernel_equals_parallel(monkeypatch) -> None:
    """Decoding on CPU goes through the C++ step (one call per token for all layers), and
    still equals the parallel form."""
    import bdh.ops.decode as decode
    from bdh.ops.decode import cpu

    require_cpp_kernel(cpu._kernel() is not None, "decoding")
    calls = []
    kernel_step = decode.decode_token_cpu
    monkeypatch.setattr(decode, "decode_token_cpu", lambda *a: calls.append(1) or kernel_step(*a))
    torch.manual_seed(2)
    model = bdh.BDH(_random_config(2, 4, 128, 16)).double().eval()
    idx = torch.randint(0, 256, (1, 24))
    parallel, _ = model(idx)
    recurrent_logits = _step_by_step(model, idx, prefix=4)
    assert len(calls) == 20
    torch.testing.assert_close(recurrent_logits, parallel, rtol=0, atol=1e-9)


def test_state_size_does_not_grow() -> None:
    model = bdh.BDH(bdh.preset("tiny")).eval()
    state = model.init_state(1)
    size = state.nbytes()
    c = model.config
    assert state.kv.shape == (c.n_layer, 1, c.n_head, c.neurons_per_head, c.n_embd)
    _, state = model.prefill(torch.randint(0, 256, (1, 700)), state)
    for t in range(20):
        _, state = model.step(torch.tensor([t]), state)
    assert state.nbytes() == size and state.position == 720


FORMS = {
    "chunked-7": lambda q, k, v, s: causal_linear_attention_chunked(q, k, v, s, True, chunk_size=7),
    "chunked-64": lambda q, k, v, s: causal_linear_attention_chunked(q, k, v, s, True, chunk_size=64),
    "recurrent": lambda q, k, v, s: causal_linear_attention_recurrent(q, k, v, s, True),
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("shared_value_head", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_attention_forms_equal_naive(form, shared_value_head, with_state, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    B, H, T, N, D = 2, 3, 1 + seed * 37, 8, 5
    q = torch.randn(B, H, T, N, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, T, N, generator=g, dtype=torch.float64)
    v = torch.randn(B, 1 if shared_value_head else H, T, D, generator=g, dtype=torch.float64)
    s0 = torch.randn(B, H, N, D, generator=g, dtype=torch.float64) if with_state else None
    ref_out, ref_state = causal_linear_attention_naive(q, k, v, s0, True)
    out, state = FORMS[form](q, k, v, s0)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-10)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-10)


def test_naive_excludes_the_diagonal() -> None:
    q = torch.ones(1, 1, 3, 2)
    v = torch.tensor([1.0, 10.0, 100.0]).view(1, 1, 3, 1)
    out, _ = causal_linear_attention_naive(q, q, v)
    # o_t = sum_{s<t} (q_t . q_s) v_s with q_t . q_s = 2
    assert out.view(-1).tolist() == [0.0, 2.0, 22.0]
