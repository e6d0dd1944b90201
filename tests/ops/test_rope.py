"""The complex-phasor RoPE against the official formula."""

from __future__ import annotations

import pytest
import torch

from bdh.ops.rope import (
    apply_rope,
    apply_rope_phasors,
    rope_cos_sin,
    rope_frequencies,
    rope_phasors,
)


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
