"""Every fast attention form against its plain twin, over a seeded parameter grid."""

from __future__ import annotations

import pytest
import torch

import bdh.ops.attention as attention
from bdh.ops.attention import (
    causal_linear_attention,
    causal_linear_attention_chunked,
    causal_linear_attention_naive,
    causal_linear_attention_recurrent,
    linear_attention_step,
    shared_qk_attention,
)
from bdh.ops.attention.parallel import causal_linear_attention_parallel

# (B, H, T, N, D, shared value head)
GRID = [
    (1, 1, 1, 4, 3, True),
    (2, 1, 7, 8, 5, False),
    (2, 3, 33, 16, 8, True),
    (3, 4, 64, 12, 6, False),
    (2, 4, 130, 32, 16, True),
]
FP32_RTOL = 1e-5


def _inputs(B, H, T, N, D, shared, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, H, T, N, generator=g, dtype=dtype).relu()
    v = torch.randn(B, 1 if shared else H, T, D, generator=g, dtype=dtype)
    state = torch.randn(B, H, N, D, generator=g, dtype=dtype)
    return qk, v, state


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("shape", GRID, ids=str)
def test_parallel_forward_and_gradients_equal_naive_fp64(shape) -> None:
    qk, v, _ = _inputs(*shape)
    grad_out = torch.randn(shape[0], shape[1], shape[2], shape[4], dtype=torch.float64)
    results = []
    for fn in (
        lambda a, b: causal_linear_attention_naive(a, a, b)[0],
        lambda a, b: causal_linear_attention_parallel(a, b)[0],
    ):
        a, b = qk.clone().requires_grad_(), v.clone().requires_grad_()
        out = fn(a, b)
        out.backward(grad_out)
        results.append((out.detach(), a.grad, b.grad))
    for ours, ref in zip(results[1], results[0]):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_parallel_equals_naive_fp32_and_bf16_runs() -> None:
    qk, v, _ = _inputs(2, 4, 256, 64, 32, True, dtype=torch.float32)
    assert _rel(causal_linear_attention_parallel(qk, v)[0], causal_linear_attention_naive(qk, qk, v)[0]) < FP32_RTOL
    a, b = qk.bfloat16().requires_grad_(), v.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_linear_attention_parallel(a, b)[0]
    out.float().sum().backward()
    assert a.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.float32


@pytest.mark.parametrize("shape", GRID, ids=str)
@pytest.mark.parametrize("chunk_size", [1, 5, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_naive(shape, chunk_size, with_state) -> None:
    qk, v, state = _inputs(*shape)
    k = qk.flip(-1)  # distinct keys: the general form, not only q = k
    initial = state if with_state else None
    ref, ref_final = causal_linear_attention_naive(qk, k, v, initial, True)
    before = state.clone()
    out, final = causal_linear_attention_chunked(qk, k, v, initial, True, chunk_size=chunk_size)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-12, atol=1e-12)
    assert torch.equal(state, before), "the initial state must not be modified"


def test_chunked_gradients_equal_naive() -> None:
    qk, v, state = _inputs(2, 2, 50, 8, 4, False)
    grads = []
    for fn in (causal_linear_attention_naive, lambda *a: causal_linear_attention_chunked(*a, chunk_size=16)):
        a, b, s = (t.clone().requires_grad_() for t in (qk, v, state))
        out, final = fn(a, a, b, s, True)
        (out.sum() + final.square().sum()).backward()
        grads.append((a.grad, b.grad, s.grad))
    for ours, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", GRID[:4], ids=str)
def test_recurrent_equals_naive(shape) -> None:
    qk, v, state = _inputs(*shape)
    ref, ref_final = causal_linear_attention_naive(qk, qk, v, state, True)
    out, final = causal_linear_attention_recurrent(qk, qk, v, state, True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, ref_final, rtol=1e-12, atol=1e-12)


def test_step_reads_before_writing_and_updates_in_place() -> None:
    qk, v, state = _inputs(2, 3, 1, 8, 4, True)
    expected_out = torch.einsum("bhn,bhnd->bhd", qk[:, :, 0], state)
    expected_state = state + qk[:, :, 0, :, None] * v[:, :, 0, None, :]
    storage = state.data_ptr()
    out = linear_attention_step(qk[:, :, 0], qk[:, :, 0], v[:, :, 0], state)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(state, expected_state)
    assert state.data_ptr() == storage


def test_auto_mode_picks_forms_by_length(monkeypatch) -> None:
    qk, v, state = _inputs(1, 2, 40, 8, 4, True)
    calls = []
    for name in ("causal_linear_attention_parallel", "causal_linear_attention_naive", "causal_linear_attention_chunked"):
        original = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    ref = causal_linear_attention_naive(qk, qk, v)[0]
    # the entry point names the form, whatever the identity of its arguments
    for expect, call in [
        ("causal_linear_attention_parallel", lambda: shared_qk_attention(qk, v)),
        ("causal_linear_attention_parallel", lambda: shared_qk_attention(qk, v, state, True)),
        ("causal_linear_attention_naive", lambda: causal_linear_attention(qk, qk, v)),
        ("causal_linear_attention_naive", lambda: causal_linear_attention(qk, qk, v, initial_state=state)),
    ]:
        calls.clear()
        call()
        assert calls == [expect]
    monkeypatch.setattr(attention, "QUADRATIC_MAX_LEN", 16)
    for call in (lambda: causal_linear_attention(qk, qk, v), lambda: shared_qk_attention(qk, v)):
        calls.clear()
        out, _ = call()
        assert calls == ["causal_linear_attention_chunked"]
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("mode", ["naive", "parallel", "chunked", "recurrent"])
def test_every_mode_through_the_dispatcher(mode) -> None:
    qk, v, _ = _inputs(2, 2, 20, 8, 4, True)
    ref = causal_linear_attention_naive(qk, qk, v)[0]
    torch.testing.assert_close(shared_qk_attention(qk, v, mode=mode)[0], ref)
    if mode != "parallel":
        torch.testing.assert_close(causal_linear_attention(qk, qk, v, mode=mode)[0], ref)


def test_parallel_mode_rejects_what_it_cannot_do() -> None:
    qk, v, state = _inputs(1, 1, 4, 4, 2, True)
    with pytest.raises(ValueError):
        causal_linear_attention(qk, qk.clone(), v, mode="parallel")
    with pytest.raises(ValueError):
        causal_linear_attention(qk, qk, v, state, mode="parallel")
