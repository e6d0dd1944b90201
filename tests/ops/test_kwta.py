"""The C++ k-WTA kernel against its torch.topk twin, ties and NaN included."""

from __future__ import annotations

import os

import pytest
import torch

from bdh.ops import cpp, kwta
from bdh.ops.kwta import kernel_available, kwta_mask, kwta_mask_cpu, kwta_mask_naive
from tests.conftest import require_cpp_kernel


@pytest.fixture(scope="module")
def kernel() -> None:
    require_cpp_kernel(kernel_available(), "k-WTA")


def _cases(seed: int = 0):
    """(z, k, per-row counts) over shapes, dtypes and tie patterns."""
    g = torch.Generator().manual_seed(seed)
    for case in range(60):
        rows, n = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 150, (1,), generator=g))
        if case % 3 == 0:
            z = torch.randint(-2, 3, (rows, n), generator=g).float()  # many ties
        elif case % 3 == 1:
            z = torch.randn(rows, n, generator=g).relu()  # ties at zero, as x has
        else:
            z = torch.randn(rows, n, generator=g)
        if case % 4 == 0:
            z[0, n // 2] = float("nan")
        if case % 5 == 0:
            z[:, :] = 0.69  # one value everywhere, as y on a sequence's first token
        if case % 7 == 0:
            z = (z * 0).where(torch.rand(z.shape, generator=g) < 0.5, -(z * 0))  # -0.0 and +0.0
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        counts = torch.randint(0, k + 1, (rows,), generator=g)
        yield z, k, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_kernel_equals_topk_twin(kernel, dtype) -> None:
    for z, k, counts in _cases():
        z = z.to(dtype)
        fixed = kwta_mask(z, k)
        assert torch.equal(fixed, kwta_mask_naive(z, k))
        assert fixed.sum(-1).tolist() == [k] * z.shape[0]
        for bound in (k, None, k // 2, 0):
            per_row = kwta_mask(z, counts, bound)
            assert torch.equal(per_row, kwta_mask_naive(z, counts, bound))
            limit = counts.max() if bound is None else bound
            assert per_row.sum(-1).tolist() == counts.clamp(max=limit).tolist()


def test_mask_keeps_the_largest(kernel) -> None:
    z = torch.tensor([[0.1, 0.9, -1.0, 0.5, 0.7]])
    assert kwta_mask(z, 2).tolist() == [[False, True, False, False, True]]
    assert kwta_mask(z, torch.tensor([3]), 4).tolist() == [[False, True, False, True, True]]


def test_kernel_is_one_op_in_compiled_code(kernel) -> None:
    def cell(z: torch.Tensor) -> torch.Tensor:
        return z * kwta_mask(z, 3).to(z.dtype)

    def transposed(z: torch.Tensor) -> torch.Tensor:  # a non-contiguous input
        return kwta_mask(z.t(), 3)

    z = torch.randn(8, 16)
    explain = torch._dynamo.explain(cell)(z)
    assert explain.graph_break_count == 0
    assert torch.equal(torch.compile(cell)(z), cell(z))
    assert torch.equal(torch.compile(transposed)(z), kwta_mask_naive(z.t(), 3))
    torch.library.opcheck(kwta_mask_cpu, (z.t(), torch.tensor([1, 2] * 8), 0, -1))


def test_kernel_refuses_what_the_twin_refuses(kernel) -> None:
    z = torch.randn(3, 5)
    for k in (6, -1):
        with pytest.raises(RuntimeError):
            kwta_mask_naive(z, k)
        with pytest.raises(RuntimeError):
            kwta_mask(z, k)


def test_falls_back_to_topk_without_kernel(monkeypatch) -> None:
    monkeypatch.setitem(cpp._loaded, kwta.cpu.NAME, None)
    calls = []
    monkeypatch.setattr(kwta, "kwta_mask_cpu", lambda *a: calls.append(a) or kwta_mask_cpu(*a))
    z = torch.randn(4, 10)
    assert torch.equal(kwta_mask(z, 3), kwta_mask_naive(z, 3))
    assert not calls


def test_pip_ninja_is_put_on_path(monkeypatch) -> None:
    import sys
    import types

    monkeypatch.setattr(cpp.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "ninja", types.SimpleNamespace(BIN_DIR="/opt/venv/ninja-bin"))
    monkeypatch.setenv("PATH", "/usr/bin")
    cpp._put_ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep)[:2] == ["/opt/venv/ninja-bin", "/usr/bin"]
