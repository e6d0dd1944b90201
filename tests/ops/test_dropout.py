"""The C++ Bernoulli kernel against torch's own draws, and `dropout` against F.dropout:
the same mask from the same generator state, bitwise, and the generator left where torch
leaves it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import bdh
from bdh.ops import dropout as dropout_ops
from bdh.ops.dropout import Dropout, bernoulli_cpu_, bernoulli_naive_, dropout, kernel_matches_torch
from bdh.ops.dropout.cpu import DTYPES, _kernel
from tests.conftest import require_cpp_kernel


@pytest.fixture(scope="module")
def kernel() -> None:
    require_cpp_kernel(_kernel() is not None, "Bernoulli")


def _both(draw, seed: int, advance: int):
    """`draw()` from one generator state twice: with torch's draws and with the kernel's."""
    results = []
    for bernoulli in (bernoulli_naive_, bernoulli_cpu_):
        torch.manual_seed(seed)
        torch.rand(advance)  # start anywhere in the generator's 624-word state
        results.append((draw(bernoulli), torch.get_rng_state()))
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("numel", [1, 2, 311, 312, 313, 624, 625, 2048, 2049, 5000])
def test_kernel_draws_torchs_numbers(kernel, dtype, numel) -> None:
    for advance in (0, 1, 311, 623):
        (a, state_a), (b, state_b) = _both(
            lambda bernoulli: bernoulli(torch.empty(numel, dtype=dtype), 0.9), numel, advance
        )
        assert torch.equal(a, b) and torch.equal(state_a, state_b), (advance, a.sum(), b.sum())


@settings(max_examples=40, deadline=None)
@given(
    numel=st.integers(0, 3000),
    p=st.sampled_from([0.0, 1e-9, 0.1, 0.5, 0.9, 1 - 1e-12, 1.0]) | st.floats(0.0, 1.0),
    advance=st.integers(0, 700),
)
def test_kernel_draws_torchs_numbers_at_any_p(kernel, numel, p, advance) -> None:
    (a, state_a), (b, state_b) = _both(
        lambda bernoulli: bernoulli(torch.empty(numel), p), 7, advance
    )
    assert torch.equal(a, b) and torch.equal(state_a, state_b)


def test_kernel_refuses_bad_input(kernel) -> None:
    with pytest.raises(RuntimeError, match="p must be in"):
        bernoulli_cpu_(torch.empty(4), 1.5)
    with pytest.raises(RuntimeError, match="float32, float64, bfloat16 or float16"):
        bernoulli_cpu_(torch.empty(4, dtype=torch.int32), 0.5)
    with pytest.raises(RuntimeError, match="contiguous CPU tensor"):
        bernoulli_cpu_(torch.empty(4, 4).t(), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_is_f_dropout_values_and_gradients(kernel, dtype) -> None:
    assert kernel_matches_torch()
    x0 = torch.randn(3, 5, 77, dtype=dtype)
    results = []
    for fn in (F.dropout, dropout):
        torch.manual_seed(1)
        x = x0.clone().requires_grad_()
        out = fn(x, 0.1, True)
        out.backward(torch.arange(out.numel(), dtype=dtype).view_as(out))
        results.append((out.detach(), x.grad, torch.get_rng_state()))
    (out_a, grad_a, state_a), (out_b, grad_b, state_b) = results
    assert (
        torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b) and torch.equal(state_a, state_b)
    )
    assert (out_a == 0).any() and (out_a != 0).any()


def test_dropout_falls_back_where_the_kernel_does_not_apply(kernel, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(
        dropout_ops, "bernoulli_cpu_", lambda x, p: calls.append(p) or bernoulli_cpu_(x, p)
    )
    x = torch.randn(8, 8)
    assert dropout(x, 0.1, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    dropout(x.t(), 0.1)  # not contiguous
    assert calls == []
    dropout(x, 0.1)
    assert calls == [pytest.approx(0.9)]


def test_bdh_training_step_is_unchanged_by_the_kernel(kernel, monkeypatch) -> None:
    """A training step of BDH with dropout: loss, gradients and generator state as with
    `F.dropout` (the default model stays the official one)."""
    config = dataclasses.replace(bdh.preset("tiny"), dropout=0.1)  # the official default
    idx = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    results, drawn = [], []
    for use_kernel in (False, True):
        if not use_kernel:
            monkeypatch.setattr(dropout_ops, "kernel_matches_torch", lambda: False)
        else:
            monkeypatch.undo()
            monkeypatch.setattr(
                dropout_ops,
                "bernoulli_cpu_",
                lambda x, p: drawn.append(x.shape) or bernoulli_cpu_(x, p),
            )
        torch.manual_seed(0)
        model = bdh.BDH(config).train()
        assert isinstance(model.drop, Dropout)
        _, loss = model(idx, idx)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters()], torch.get_rng_state()))
    (loss_a, grads_a, state_a), (loss_b, grads_b, state_b) = results
    assert len(drawn) == config.n_layer  # the second run drew its masks with the kernel
    assert torch.equal(loss_a, loss_b) and torch.equal(state_a, state_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
