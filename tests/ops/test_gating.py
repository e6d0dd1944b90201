"""BDH's gate (relu, product, dropout): the C++ kernel against its torch twin, bitwise,
forward and backward, with the same random draws; and the model's probes around it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bdh
from bdh.ops import gating
from bdh.ops.gating import gate, gate_cpu, gate_naive
from bdh.ops.gating.cpu import DTYPES, kernel_available
from tests.conftest import require_cpp_kernel


@pytest.fixture(scope="module")
def kernel() -> None:
    require_cpp_kernel(kernel_available(), "gate")


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).relu().to(dtype)
    y_pre = torch.randn(shape, generator=g).to(dtype)
    # The gradient arrives in the decoder's layout [B, T, H, N], seen as [B, H, T, N].
    b, h, t, n = shape
    grad = torch.randn((b, t, h, n), generator=g).to(dtype).transpose(1, 2)
    return x, y_pre, grad


def _run(fn, x, y_pre, grad, p, extra=False):
    torch.manual_seed(7)
    a, b = x.clone().requires_grad_(), y_pre.clone().requires_grad_()
    y, xy, out = fn(a, b, p)
    loss = (out * grad).sum()
    if extra:  # y and xy feed the loss too, not only the dropped product
        loss = loss + (y * 0.5).sum() + (xy * grad).sum()
    loss.backward()
    return y, xy, out, a.grad, b.grad, torch.get_rng_state()


@given(
    b=st.integers(1, 3),
    h=st.integers(1, 4),
    t=st.integers(1, 9),
    n=st.integers(1, 70),
    p=st.sampled_from([0.1, 0.5, 0.9]),
    dtype=st.sampled_from(DTYPES),
    extra=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_kernel_equals_twin_bitwise(kernel, b, h, t, n, p, dtype, extra) -> None:
    """Outputs, gradients of both inputs, and the generator after: the same bits."""
    x, y_pre, grad = _inputs((b, h, t, n), dtype)
    expected = _run(lambda a, c, q: gate_naive(a, c, q, True), x, y_pre, grad, p, extra)
    got = _run(gate_cpu, x, y_pre, grad, p, extra)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype and torch.equal(g, e)


def test_dropped_product_comes_in_the_decoders_layout(kernel) -> None:
    x, y_pre, _ = _inputs((2, 3, 5, 8), torch.float32)
    _, _, out = gate_cpu(x, y_pre, 0.1)
    assert out.shape == (2, 3, 5, 8) and out.transpose(1, 2).is_contiguous()


def test_nan_and_negative_activity_pass_as_in_torch(kernel) -> None:
    x = torch.tensor([[[[1.0, 2.0, float("nan"), 0.0]]]])
    y_pre = torch.tensor([[[[float("nan"), -1.0, 3.0, -0.0]]]])
    grad = torch.ones(1, 1, 1, 4)
    expected = _run(lambda a, c, q: gate_naive(a, c, q, True), x, y_pre, grad, 0.5)
    got = _run(gate_cpu, x, y_pre, grad, 0.5)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, equal_nan=True, rtol=0, atol=0)


@pytest.mark.parametrize(
    "case",
    ["training", "eval", "no dropout", "fp16", "mixed types"],
)
def test_gate_takes_the_kernel_only_where_it_applies(kernel, monkeypatch, case) -> None:
    calls = []
    monkeypatch.setattr(gating, "gate_cpu", lambda *a: calls.append(1) or gate_cpu(*a))
    x, y_pre, _ = _inputs((1, 2, 3, 4), torch.float16 if case == "fp16" else torch.float32)
    if case == "mixed types":
        y_pre = y_pre.bfloat16()
    p = 0.0 if case == "no dropout" else 0.1
    gate(x, y_pre, p, training=case != "eval")
    assert calls == ([1] if case == "training" else [])


def _tiny_training_loss(hook=None) -> torch.Tensor:
    torch.manual_seed(0)
    model = bdh.BDH(dataclasses.replace(bdh.preset("tiny"), dropout=0.1)).train()
    if hook is not None:
        model.probe_y.register_forward_hook(hook)
    idx = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    return model(idx, idx)[1]


def test_a_probe_hook_that_replaces_y_still_reaches_the_output(kernel, monkeypatch) -> None:
    """Ablating every y neuron through probe_y removes the decoder's input, with the
    kernel as without it."""

    def ablate(module, inputs, output):
        return torch.zeros_like(output)

    with_kernel = _tiny_training_loss(ablate)
    monkeypatch.setattr(gating, "kernel_available", lambda: False)
    assert torch.equal(_tiny_training_loss(ablate), with_kernel)
    assert not torch.equal(_tiny_training_loss(), with_kernel)  # the ablation did something


def test_reading_probes_keep_the_kernels_result(kernel, monkeypatch) -> None:
    """Hooks that only read (sparsity metrics, captures) see y and xy, and change nothing."""
    seen = []
    loss = _tiny_training_loss(lambda m, i, o: seen.append(o.shape) and None)
    assert len(seen) == bdh.preset("tiny").n_layer
    monkeypatch.setattr(gating, "kernel_available", lambda: False)
    assert torch.equal(_tiny_training_loss(), loss)
