"""The neuro model's rho read and write: hand-written gradients against their plain twins."""

from __future__ import annotations

import pytest
import torch

from bdh.ops.rho import rho_read, rho_read_naive, rho_write, rho_write_naive

SHAPES = [(1, 2, 1), (2, 3, 5), (4, 8, 16), (3, 5, 33)]  # B, d, n


def _inputs(B: int, d: int, n: int, seed: int, rho_dtype: torch.dtype, in_dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    rho = torch.randn(B, d, n, generator=g, dtype=torch.double).to(rho_dtype).requires_grad_()
    x = torch.randn(B, n, generator=g, dtype=torch.double).relu().to(in_dtype).requires_grad_()
    v = torch.randn(B, d, generator=g, dtype=torch.double).to(in_dtype).requires_grad_()
    keep_tensor = 0.9 * (1 - 0.5 * (torch.rand(B, 1, n, generator=g) < 0.3).double())
    return rho, x, v, keep_tensor.to(rho_dtype)


def _read_then_write(read, write, rho, x, v, keep):
    """One token as the model runs it: read, then write the rho the read handed on."""
    a, passed = read(rho, x)
    return a, write(passed, v * a.sum(-1, keepdim=True).to(v.dtype), x, keep)


def _grads(out, inputs, seed: int):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.double).to(o.dtype) for o in out]
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    return torch.autograd.grad(loss, inputs)


def _assert_twins(fused, naive, inputs, seed: int, exact: bool) -> None:
    """Equal outputs (in rho's dtype) and equal gradients (in each input's dtype)."""
    tol = dict(atol=1e-12, rtol=1e-12) if exact else dict(atol=1e-5, rtol=1e-5)
    for got, want in zip(fused, naive):
        assert got.dtype == want.dtype == inputs[0].dtype
        torch.testing.assert_close(got, want, **tol)
    got_grads, want_grads = _grads(fused, inputs, seed), _grads(naive, inputs, seed)
    for i, (got, want) in enumerate(zip(got_grads, want_grads)):
        assert got.dtype == want.dtype == inputs[i].dtype, i
        torch.testing.assert_close(got, want, **tol, msg=f"input {i}")


# fp64 throughout, and rho and the activity in different dtypes (the op computes in rho's)
DTYPES = [
    (torch.double, torch.double),
    (torch.double, torch.float32),
    (torch.float32, torch.double),
]


@pytest.mark.parametrize(("rho_dtype", "in_dtype"), DTYPES)
@pytest.mark.parametrize("keep_kind", ["float", "tensor"])
def test_fused_equals_naive_twin(rho_dtype, in_dtype, keep_kind) -> None:
    exact = rho_dtype == in_dtype == torch.double
    for seed, (B, d, n) in enumerate(SHAPES):
        rho, x, v, keep_tensor = _inputs(B, d, n, seed, rho_dtype, in_dtype)
        keep = 0.97 if keep_kind == "float" else keep_tensor
        _assert_twins(rho_read(rho, x), rho_read_naive(rho, x), (rho, x), seed, exact)
        write = (rho_write(rho, v, x, keep),)
        _assert_twins(write, (rho_write_naive(rho, v, x, keep),), (rho, v, x), seed, exact)
        fused = _read_then_write(rho_read, rho_write, rho, x, v, keep)
        naive = _read_then_write(rho_read_naive, rho_write_naive, rho, x, v, keep)
        _assert_twins(fused, naive, (rho, x, v), seed, exact)


def test_autocast_leaves_the_state_in_its_dtype() -> None:
    rho, x, v, keep = _inputs(2, 4, 8, 3, torch.float32, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _read_then_write(rho_read, rho_write, rho, x, v, keep)
        naive = _read_then_write(rho_read_naive, rho_write_naive, rho, x, v, keep)
    _assert_twins(fused, naive, (rho, x, v), 3, exact=False)


def test_read_hands_rho_on_unchanged() -> None:
    rho, x, _, _ = _inputs(2, 3, 4, 0, torch.double, torch.double)
    for read in (rho_read, rho_read_naive):
        a, passed = read(rho, x)
        assert torch.equal(passed, rho) and a.shape == (2, 3)
        torch.testing.assert_close(a, torch.einsum("bdn,bn->bd", rho, x))


def test_rho_read_and_write_gradients():
    g = torch.Generator().manual_seed(0)
    rho, x, v = (
        torch.randn(*s, generator=g, dtype=torch.double, requires_grad=True)
        for s in ((2, 3, 5), (2, 5), (2, 3))
    )
    keep = torch.rand(2, 1, 5, generator=g, dtype=torch.double)
    assert torch.autograd.gradcheck(rho_read, (rho, x))
    assert torch.autograd.gradcheck(lambda r, a, b: rho_write(r, a, b, keep), (rho, v, x))
    assert torch.autograd.gradcheck(lambda r, a, b: rho_write(r, a, b, 0.9), (rho, v, x))

    def read_then_write(r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        read, passed = rho_read(r, b)
        return rho_write(passed, a * read.sum(), b, keep)  # both gradients reach rho

    assert torch.autograd.gradcheck(read_then_write, (rho, v, x))
