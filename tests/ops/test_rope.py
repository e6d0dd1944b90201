"""The complex-phasor RoPE against the official formula, and its C++ kernel against the\ntorch form."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bdh.ops.rope import (
    apply_rope,
    apply_rope_phasors,
    kernel_available,
    rope_cos_sin,
    rope_frequencies,
    rope_phasors,
    rotate_pairs_cpu,
    rotate_pairs_torch,
)
from bdh.ops.rope.cpu import DTYPES
from tests.conftest import require_cpp_kernel


@pytest.mark.parametrize("start,length,n", [(0, 1, 2), (0, 37, 16), (5, 64, 64), (100_000, 3, 256)])
def test_phasor_rotation_equals_official_formula_fp32(start, length, n) -> None:
    freqs = rope_frequencies(n)
    cos, sin = rope_cos_sin(start, length, freqs)
    x = torch.randn(2, 3, length, n).relu()
    expected = apply_rope(x, cos, sin)
    got = apply_rope_phasors(x, rope_phasors(start, length, freqs))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_phasor_gradient_equals_autograd_of_official_formula() -> None:
    freqs = rope_frequencies(32, dtype=torch.float64)
    cos, sin = rope_cos_sin(3, 20, freqs)
    x = torch.randn(2, 2, 20, 32, dtype=torch.float64)
    grad = torch.randn_like(x)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    apply_rope(a, cos, sin).backward(grad)
    apply_rope_phasors(b, rope_phasors(3, 20, freqs)).backward(grad)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_bf16_inputs() -> None:
    freqs = rope_frequencies(16)
    phasors = rope_phasors(0, 8, freqs)
    cos, sin = rope_cos_sin(0, 8, freqs)
    x = torch.randn(3, 2, 8, 16).transpose(0, 1)  # last dim contiguous, batch dims not
    torch.testing.assert_close(apply_rope_phasors(x, phasors), apply_rope(x, cos, sin))
    xb = x.bfloat16()
    out = apply_rope_phasors(xb, phasors)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), apply_rope(x, cos, sin), rtol=2e-2, atol=2e-2)


# ---- the C++ kernel against its twin -------------------------------------------------


@pytest.fixture(scope="module")
def kernel() -> None:
    require_cpp_kernel(kernel_available(), "RoPE")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conjugate", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 37, 64), (1, 4, 5, 1024), (3, 1, 2, 32)])
def test_kernel_equals_torch_form_bitwise(kernel, dtype, conjugate, shape) -> None:
    """Where torch's vector loop covers every pair (n/2 a multiple of 16), the same bits."""
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3).relu().to(dtype)
    phasors = rope_phasors(11, shape[-2], rope_frequencies(shape[-1]))
    expected = rotate_pairs_torch(x, phasors.conj() if conjugate else phasors)
    assert torch.equal(rotate_pairs_cpu(x, phasors, conjugate), expected)


@given(
    n_pairs=st.integers(1, 40),
    length=st.integers(1, 9),
    batch=st.integers(1, 3),
    start=st.integers(0, 10_000),
    dtype=st.sampled_from(DTYPES),
    conjugate=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_kernel_agrees_with_torch_form_at_any_size(
    kernel, n_pairs, length, batch, start, dtype, conjugate
) -> None:
    """Any n: pairs left over by torch's vector loop go through its scalar loop, which may
    fuse a multiply-add, so results there differ by a product's rounding error (of the
    size of eps * |x|), and half types by one unit in the last place after rounding."""
    n = 2 * n_pairs
    x = torch.randn(batch, length, n).to(dtype)
    phasors = rope_phasors(start, length, rope_frequencies(n))
    expected = rotate_pairs_torch(x, phasors.conj() if conjugate else phasors)
    got = rotate_pairs_cpu(x, phasors, conjugate)
    assert got.dtype == dtype
    bound = 2 * torch.finfo(dtype).eps * x.float().abs().max().item()
    torch.testing.assert_close(got, expected, rtol=0, atol=bound)


def test_kernel_refuses_mismatched_phasors(kernel) -> None:
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="phasors must be"):
        rotate_pairs_cpu(x, rope_phasors(0, 4, rope_frequencies(8)))


def test_bf16_rope_forward_and_backward_use_the_kernel_and_match_torch(kernel, monkeypatch) -> None:
    """`apply_rope_phasors` on bf16: the kernel's output and gradient equal the torch form's."""
    import bdh.ops.rope as rope

    calls = []
    monkeypatch.setattr(
        rope, "rotate_pairs_cpu", lambda *a: calls.append(a[2]) or rotate_pairs_cpu(*a)
    )
    x = torch.randn(2, 4, 16, 64).relu().bfloat16()
    phasors = rope_phasors(3, 16, rope_frequencies(64))
    grad = torch.randn_like(x)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = apply_rope_phasors(a, phasors)
    out.backward(grad)
    assert calls == [False, True]  # forward, then backward by the conjugate
    expected = rotate_pairs_torch(x, phasors)
    assert torch.equal(out, expected)
    assert torch.equal(a.grad, rotate_pairs_torch(grad, phasors.conj()))
    monkeypatch.setattr(rope, "kernel_available", lambda: False)
    apply_rope_phasors(b, phasors).backward(grad)
    assert torch.equal(b.grad, a.grad) and len(calls) == 2


def test_bdh_bf16_training_step_is_unchanged_by_the_kernel(kernel, monkeypatch) -> None:
    """A BDH step under bf16 autocast: loss and every gradient as with the torch form."""
    import bdh
    import bdh.ops.rope as rope

    idx = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    results, calls = [], []
    for use_kernel in (False, True):
        if use_kernel:
            monkeypatch.undo()
            monkeypatch.setattr(
                rope, "rotate_pairs_cpu", lambda *a: calls.append(1) or rotate_pairs_cpu(*a)
            )
        else:
            monkeypatch.setattr(rope, "kernel_available", lambda: False)
        torch.manual_seed(0)
        model = bdh.BDH(bdh.preset("tiny")).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(idx, idx)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert len(calls) == 2 * bdh.preset("tiny").n_layer  # forward and backward of every layer
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
