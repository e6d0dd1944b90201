"""The C++ decoder product of a decoding step against its torch.bmm twin."""

from __future__ import annotations

import pytest
import torch

import bdh
from bdh.ops import gated_decoder
from bdh.ops.gated_decoder import cpu, gated_decoder_cpu, gated_decoder_step, gated_decoder_torch
from tests.conftest import require_cpp_kernel


@pytest.fixture(scope="module")
def kernel() -> None:
    require_cpp_kernel(cpu._kernel() is not None, "decoder")


def _sparse(shape, density: float, generator, dtype) -> torch.Tensor:
    values = torch.rand(shape, generator=generator, dtype=dtype)
    return values * (torch.rand(shape, generator=generator, dtype=dtype) < density)


@pytest.mark.parametrize("seed", range(12))
def test_kernel_equals_twin_fp64(kernel, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    H, B, N, D = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (5, 6, 300, 70))
    density = [0.0, 0.05, 0.3, 1.0][seed % 4]
    x, y = (_sparse((H, B, N), density, g, torch.float64) for _ in range(2))
    decoder = torch.randn(H, N, D, generator=g, dtype=torch.float64)
    torch.testing.assert_close(gated_decoder_cpu(x, y, decoder), gated_decoder_torch(x, y, decoder),
                               rtol=0, atol=1e-12)  # fmt: skip


def test_kernel_equals_twin_fp32(kernel) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = (_sparse((4, 2, 1024), 0.5, g, torch.float32) for _ in range(2))
    decoder = torch.randn(4, 1024, 128, generator=g)
    torch.testing.assert_close(gated_decoder_cpu(x, y, decoder), gated_decoder_torch(x, y, decoder),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_selection(kernel) -> None:
    big = torch.zeros(4, 1024, 128)  # 2 MiB: above the threshold
    x = torch.ones(4, 1, 1024)
    assert cpu.kernel_applies(x, x, big)
    assert not cpu.kernel_applies(x, x, big[:, :, :16])  # 256 KiB: stays in cache, the twin runs
    assert not cpu.kernel_applies(torch.ones(4, cpu.MAX_BATCH + 1, 1024), torch.ones(4, cpu.MAX_BATCH + 1, 1024), big)
    assert not cpu.kernel_applies(x, x, big.bfloat16())
    assert not cpu.kernel_applies(x.requires_grad_(), x, big)


def test_decoding_through_the_kernel_equals_parallel_fp64(kernel, monkeypatch) -> None:
    monkeypatch.setattr(cpu, "MIN_DECODER_BYTES", 0)  # let the kernel take every step
    calls = []
    monkeypatch.setattr(gated_decoder, "gated_decoder_cpu", lambda *a: calls.append(1) or gated_decoder_cpu(*a))
    torch.manual_seed(0)
    model = bdh.BDH(bdh.preset("tiny", n_layer=2)).double().eval()
    idx = torch.randint(0, 256, (2, 12))
    parallel, _ = model(idx)
    logits, state = model.prefill(idx[:, :4])
    pieces = [logits]
    for t in range(4, 12):
        step_logits, state = model.step(idx[:, t], state)
        pieces.append(step_logits[:, None])
    torch.testing.assert_close(torch.cat(pieces, 1), parallel, rtol=0, atol=1e-9)
    assert len(calls) == 2 * 8  # two layers, eight steps


def test_step_selects_the_twin_without_the_kernel(monkeypatch) -> None:
    monkeypatch.setattr(cpu, "_kernel", lambda: None)
    x = torch.ones(4, 1, 1024)
    out = gated_decoder_step(x, x, torch.ones(4, 1024, 128))
    assert torch.equal(out, torch.full((4, 1, 128), 1024.0))
