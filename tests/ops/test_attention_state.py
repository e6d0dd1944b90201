"""Stateful and damped attention: every form's forward and backward against the naive twin.

Grid over (B, H, T, N, D, one value head), chunk sizes that do not divide T, an initial
state that requires grad or not (or none), damping off, one factor, or one per head;
gradients w.r.t. q, k, v and the initial state, through the output and the final state.
"""

from __future__ import annotations

import pytest
import torch

from bdh.ops.attention import (
    causal_linear_attention_chunked,
    causal_linear_attention_naive,
    causal_linear_attention_parallel,
    causal_linear_attention_recurrent,
    shared_qk_attention,
    shared_qk_step,
)

# (B, H, T, N, D, one value head)
GRID = [
    (1, 1, 1, 4, 3, True),
    (2, 1, 7, 8, 5, False),
    (2, 3, 33, 16, 8, True),
    (3, 4, 45, 12, 6, False),
]
DAMPINGS = {"off": None, "one": [0.9], "per-head": "per-head"}
TOL = dict(rtol=1e-10, atol=1e-11)


def _decay(kind, H):
    spec = DAMPINGS[kind]
    if spec == "per-head":
        return torch.tensor([1 - 2.0 ** (-(h + 1)) for h in range(H)], dtype=torch.float64)
    return None if spec is None else torch.tensor(spec, dtype=torch.float64)


def _inputs(B, H, T, N, D, shared, seed=0):
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(B, H, T, N, generator=g, dtype=torch.float64).relu()
    k = torch.randn(B, H, T, N, generator=g, dtype=torch.float64)
    v = torch.randn(B, 1 if shared else H, T, D, generator=g, dtype=torch.float64)
    state = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    grad_out = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    grad_final = torch.randn(B, H, N, D, generator=g, dtype=torch.float64)
    return qk, k, v, state, grad_out, grad_final


def _run(fn, tensors, state, state_grad, grad_out, grad_final):
    """Forward and backward through output and final state; returns (out, final, grads)."""
    leaves = [t.clone().requires_grad_() for t in tensors]
    s0 = None
    if state is not None:
        s0 = state.clone().requires_grad_(state_grad)
    out, final = fn(*leaves, s0)
    torch.autograd.backward([out, final], [grad_out, grad_final])
    grads = [t.grad for t in leaves] + ([s0.grad] if state_grad else [])
    return out.detach(), final.detach(), grads


GENERAL_FORMS = {
    "chunked-5": lambda q, k, v, s, d: causal_linear_attention_chunked(q, k, v, s, True, 5, d),
    "chunked-16": lambda q, k, v, s, d: causal_linear_attention_chunked(q, k, v, s, True, 16, d),
    "recurrent": lambda q, k, v, s, d: causal_linear_attention_recurrent(q, k, v, s, True, d),
}


@pytest.mark.parametrize("shape", GRID, ids=str)
@pytest.mark.parametrize("form", list(GENERAL_FORMS))
@pytest.mark.parametrize("state_kind", ["none", "constant", "grad"])
@pytest.mark.parametrize("damping", list(DAMPINGS))
def test_general_forms_forward_and_backward_equal_naive(shape, form, state_kind, damping) -> None:
    qk, k, v, state, g_out, g_final = _inputs(*shape)
    decay = _decay(damping, shape[1])
    s = None if state_kind == "none" else state
    grad_s = state_kind == "grad"
    ref = _run(
        lambda q_, k_, v_, s_: causal_linear_attention_naive(q_, k_, v_, s_, True, decay),
        (qk, k, v), s, grad_s, g_out, g_final,
    )  # fmt: skip
    ours = _run(
        lambda q_, k_, v_, s_: GENERAL_FORMS[form](q_, k_, v_, s_, decay),
        (qk, k, v),
        s,
        grad_s,
        g_out,
        g_final,
    )
    torch.testing.assert_close(ours[0], ref[0], **TOL)
    torch.testing.assert_close(ours[1], ref[1], **TOL)
    for a, b in zip(ours[2], ref[2], strict=True):
        torch.testing.assert_close(a, b, **TOL)


SHARED_FORMS = {
    "parallel": lambda qk, v, s, d: causal_linear_attention_parallel(qk, v, s, True, d),
    "auto": lambda qk, v, s, d: shared_qk_attention(qk, v, s, True, d),
    "chunked-7": lambda qk, v, s, d: shared_qk_attention(
        qk, v, s, True, d, mode="chunked", chunk_size=7
    ),
}


@pytest.mark.parametrize("shape", GRID, ids=str)
@pytest.mark.parametrize("form", list(SHARED_FORMS))
@pytest.mark.parametrize("state_kind", ["none", "constant", "grad"])
@pytest.mark.parametrize("damping", list(DAMPINGS))
def test_shared_qk_forms_forward_and_backward_equal_naive(shape, form, state_kind, damping) -> None:
    qk, _, v, state, g_out, g_final = _inputs(*shape)
    decay = _decay(damping, shape[1])
    s = None if state_kind == "none" else state
    grad_s = state_kind == "grad"
    ref = _run(
        lambda a, b, s_: causal_linear_attention_naive(a, a, b, s_, True, decay),
        (qk, v),
        s,
        grad_s,
        g_out,
        g_final,
    )
    ours = _run(
        lambda a, b, s_: SHARED_FORMS[form](a, b, s_, decay), (qk, v), s, grad_s, g_out, g_final
    )
    torch.testing.assert_close(ours[0], ref[0], **TOL)
    torch.testing.assert_close(ours[1], ref[1], **TOL)
    for a, b in zip(ours[2], ref[2], strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_parallel_backward_through_one_output_only() -> None:
    """Only the output, or only the final state, reaches the loss: the other's gradient is absent."""
    qk, _, v, state, g_out, g_final = _inputs(2, 3, 20, 8, 4, True)
    decay = _decay("per-head", 3)
    for use_out in (True, False):
        grads = []
        for fn in (
            causal_linear_attention_parallel,
            lambda a, b, s, f, d: causal_linear_attention_naive(a, a, b, s, f, d),
        ):
            a, b, s = (t.clone().requires_grad_() for t in (qk, v, state))
            out, final = fn(a, b, s, True, decay)
            ((out * g_out).sum() if use_out else (final * g_final).sum()).backward()
            grads.append((a.grad, b.grad, s.grad))
        for ours, ref in zip(*grads, strict=True):
            torch.testing.assert_close(ours, ref, **TOL)


def test_damping_matches_the_recurrence_by_hand() -> None:
    """rho_t = U rho_{t-1} + k_t^T v_t, o_t = q_t rho_{t-1}, spelled out for one head."""
    g = torch.Generator().manual_seed(3)
    q, k = (
        torch.randn(1, 1, 6, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 1, 6, 3, generator=g, dtype=torch.float64),
    )
    v, s0 = (
        torch.randn(1, 1, 6, 2, generator=g, dtype=torch.float64),
        torch.randn(1, 1, 3, 2, generator=g, dtype=torch.float64),
    )
    u = 0.7
    rho, outs = s0[0, 0].clone(), []
    for t in range(6):
        outs.append(q[0, 0, t] @ rho)
        rho = u * rho + torch.outer(k[0, 0, t], v[0, 0, t])
    out, final = causal_linear_attention_naive(
        q, k, v, s0, True, torch.tensor([u], dtype=torch.float64)
    )
    torch.testing.assert_close(out[0, 0], torch.stack(outs), **TOL)
    torch.testing.assert_close(final[0, 0], rho, **TOL)


def test_damping_of_one_is_exactly_undamped() -> None:
    qk, _, v, state, _, _ = _inputs(2, 3, 33, 16, 8, True)
    ones = torch.ones(3, dtype=torch.float64)
    for fn in (
        lambda d: causal_linear_attention_parallel(qk, v, state, True, d),
        lambda d: causal_linear_attention_chunked(qk, qk, v, state, True, 7, d),
    ):
        for a, b in zip(fn(None), fn(ones), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("damping", ["one", "per-head"])
def test_damped_step_equals_naive(damping) -> None:
    qk, _, v, state, _, _ = _inputs(2, 3, 9, 8, 4, False)
    decay = _decay(damping, 3)
    ref, ref_final = causal_linear_attention_naive(qk, qk, v, state, True, decay)
    s = state.clone()
    outs = [shared_qk_step(qk[:, :, t], v[:, :, t], s, decay) for t in range(9)]
    torch.testing.assert_close(torch.stack(outs, dim=2), ref, **TOL)
    torch.testing.assert_close(s, ref_final, **TOL)
