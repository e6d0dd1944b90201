"""The C++ decoding step (token to logits) equals its PyTorch twin."""

from __future__ import annotations

import pytest
import torch

from bdh.ops.decode import cpu, decode_token, decode_token_cpu, decode_token_torch
from bdh.ops.rope import rope_frequencies, rope_phasors
from tests.conftest import require_cpp_kernel

# (layers, B, H, N, D): D a multiple of 4 and not; one and several sequences and heads
GRID = [(1, 1, 1, 8, 4), (2, 3, 2, 16, 6), (3, 2, 4, 64, 16), (2, 1, 4, 256, 32)]


@pytest.fixture(scope="module", autouse=True)
def decode_kernel() -> None:
    require_cpp_kernel(cpu._kernel() is not None, "decoding")


V = 11  # vocabulary


def _inputs(L, B, H, N, D, dtype, seed=0, position=5):
    """tokens, state, weights (embed, encoder, encoder_v, decoder, lm_head), phasors"""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (B,), generator=g)
    state = torch.randn(L, B, H, N, D, generator=g, dtype=dtype)
    weights = [torch.randn(*shape, generator=g, dtype=dtype) / D**0.5
               for shape in ((V, D), (H, D, N), (H, D, N), (H * N, D), (D, V))]  # fmt: skip
    phasors = rope_phasors(position, 1, rope_frequencies(N, dtype=dtype))[0]
    return tokens, state, weights, phasors


def _tolerance(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L, B, H, N, D", GRID)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decay", [None, "one", "per-head"])
def test_kernel_equals_torch_twin(L, B, H, N, D, dtype, decay) -> None:
    tokens, state, weights, phasors = _inputs(L, B, H, N, D, dtype)
    factors = {None: None, "one": torch.tensor([0.9], dtype=dtype),
               "per-head": torch.linspace(0.5, 1.0, H, dtype=dtype)}[decay]  # fmt: skip
    twin_state, storage = state.clone(), state.data_ptr()
    with torch.inference_mode():
        out = decode_token_cpu(tokens, state, *weights, phasors, factors)
        twin = decode_token_torch(tokens, twin_state, *weights, phasors, factors)
    torch.testing.assert_close(out, twin, **_tolerance(dtype))
    torch.testing.assert_close(state, twin_state, **_tolerance(dtype))
    assert state.data_ptr() == storage  # updated in place


def test_inactive_rows_of_the_state_are_untouched() -> None:
    """Undamped, the rows of neurons whose rotated activation is zero are neither read
    nor written: inf there stays inf (the twin's 0 * inf would write NaN)."""
    tokens, state, weights, phasors = _inputs(1, 1, 2, 16, 8, torch.float64)
    embed, encoder = weights[0], weights[1]
    embed[tokens[0]] = torch.arange(8.0)  # LN(embedding) > 0 from its fifth coordinate on
    encoder[:, :4, :4] = 0.0
    encoder[:, 4:, :4] = -1.0  # the first pairs of neurons never fire: their q is zero
    state[:, :, :, :4] = float("inf")
    with torch.inference_mode():
        decode_token_cpu(tokens, state, *weights, phasors)
    assert torch.isinf(state[:, :, :, :4]).all()
    assert torch.isfinite(state[:, :, :, 4:]).all()


def test_transposed_encoder_v_follows_the_weight() -> None:
    """The cached [H, N, D] copy is rebuilt after an in-place change of encoder_v."""
    tokens, state, weights, phasors = _inputs(2, 1, 2, 16, 8, torch.float64)
    encoder_v = weights[2]
    with torch.inference_mode():
        decode_token_cpu(tokens, state.clone(), *weights, phasors)
        encoder_v.mul_(-2.0)
        out = decode_token_cpu(tokens, state.clone(), *weights, phasors)
        twin = decode_token_torch(tokens, state.clone(), *weights, phasors)
    torch.testing.assert_close(out, twin, **_tolerance(torch.float64))
    assert torch.equal(cpu.transposed_encoder_v(encoder_v), encoder_v.transpose(1, 2))


def test_dispatch_takes_the_kernel_only_where_it_applies() -> None:
    tokens, state, weights, phasors = _inputs(1, 1, 2, 16, 8, torch.float32)
    assert cpu.fused_decode_applies(tokens, state, *weights)
    half = [w.bfloat16() for w in weights]
    assert not cpu.fused_decode_applies(tokens, state.bfloat16(), *half)
    assert not cpu.fused_decode_applies(tokens, state.double(), *weights)  # mixed dtypes
    with torch.enable_grad():
        leaf = weights[1].clone().requires_grad_()
        assert not cpu.fused_decode_applies(tokens, state, weights[0], leaf, *weights[2:])
    with torch.inference_mode():  # the bf16 twin runs and agrees roughly with fp32
        out = decode_token(tokens, state.bfloat16(), *half, phasors)
        ref = decode_token(tokens, state.clone(), *weights, phasors)
    assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.1


def test_kernel_refuses_mismatched_shapes_and_tells_autograd() -> None:
    tokens, state, (embed, encoder, encoder_v, decoder, lm_head), phasors = _inputs(
        2, 2, 2, 16, 8, torch.float32
    )
    for bad in (
        (tokens[:1], state, embed, encoder, encoder_v, decoder, lm_head),
        (tokens, state, embed, encoder[:1], encoder_v, decoder, lm_head),
        (tokens, state, embed, encoder, encoder_v, decoder[:-1], lm_head),
        (tokens, state, embed, encoder, encoder_v, decoder, lm_head[:, :-1]),
        (tokens, state[:, :, :, :8], embed, encoder, encoder_v, decoder, lm_head),
        (torch.tensor([0, V]), state, embed, encoder, encoder_v, decoder, lm_head),
    ):
        with pytest.raises(RuntimeError, match="decode_token"):
            decode_token_cpu(*bad, phasors)
    weight = torch.ones(1, requires_grad=True)
    loss = (state * weight).sum()  # saves the state for backward
    with torch.no_grad():
        decode_token_cpu(tokens, state, embed, encoder, encoder_v, decoder, lm_head, phasors)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
