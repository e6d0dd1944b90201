"""A BDH cast to bf16/fp16 weights (as users do for inference) runs in every path and
stays close to fp32; `step` takes tokens [B] or HF-style [B, 1]."""

from __future__ import annotations

import pytest
import torch

import bdh
from bdh.errors import BDHError

T = 300  # past the 256 cached RoPE positions


@pytest.fixture(scope="module")
def fp32_model() -> bdh.BDH:
    torch.manual_seed(0)
    return bdh.BDH(bdh.preset("tiny", dropout=0.0)).eval()


def _cast(model: bdh.BDH, dtype: torch.dtype) -> bdh.BDH:
    copy = bdh.BDH(model.config)
    copy.load_state_dict(model.state_dict())
    return copy.to(dtype).eval()


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref).abs().max() / ref.abs().max()).item()


# Measured relative errors of the logits: bf16 0.015, fp16 0.0015.
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_weights_run_forward_prefill_step_generate_close_to_fp32(fp32_model, dtype, tolerance):
    idx = torch.randint(0, 256, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = fp32_model(idx)[0]
        ref_step = fp32_model.step(idx[:, -1], fp32_model.prefill(idx[:, :-1])[1])[0]
    model = _cast(fp32_model, dtype)
    with torch.no_grad():
        logits = model(idx)[0]
    assert logits.dtype == dtype and _rel(logits, ref) < tolerance
    prefilled, state = model.prefill(idx)
    assert _rel(prefilled, ref) < tolerance
    _, state = model.prefill(idx[:, :-1])
    stepped, state = model.step(idx[:, -1], state)
    assert state.position == T and _rel(stepped, ref_step) < tolerance
    out = model.generate(idx[:, :8], max_new_tokens=4, top_k=1)
    assert out.shape == (2, 12) and torch.equal(out[:, :8], idx[:, :8])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_cast_model_rotates_by_the_fp32_phases(fp32_model, dtype):
    model = _cast(fp32_model, dtype)
    for start, length in [(0, T), (4000, 3)]:
        assert torch.equal(
            model.attn.phasors(start, length), fp32_model.attn.phasors(start, length)
        )


def test_step_takes_tokens_b_or_b1_and_refuses_other_shapes(fp32_model):
    tokens = torch.tensor([3, 7])
    flat, _ = fp32_model.step(tokens, fp32_model.init_state(2))
    column, state = fp32_model.step(tokens[:, None], fp32_model.init_state(2))
    assert column.shape == (2, 256) and torch.equal(flat, column) and state.position == 1
    differentiable, _ = fp32_model.step(
        tokens[:, None], fp32_model.init_state(2), differentiable=True
    )
    assert torch.allclose(differentiable, flat, atol=1e-5)
    for bad in (torch.tensor([[3, 4], [5, 6]]), torch.tensor(3)):
        with pytest.raises(
            BDHError, match=r"step takes one token per sequence, shape \[B\] or \[B, 1\]"
        ):
            fp32_model.step(bad, fp32_model.init_state(2))
