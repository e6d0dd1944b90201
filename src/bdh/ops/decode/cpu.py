"""The C++ decoding step, token to logits (decode_cpu.cpp)."""

from __future__ import annotations

import weakref
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_decode_cpu"
SOURCE = Path(__file__).with_name("decode_cpu.cpp")

# encoder_v transposed to [H, N, D], by id of the weight tensor (alive: the weakref says
# so), rebuilt when the weight changes (in place: its version counter moves; replaced: its
# storage pointer does). Entries go with their weights. Not a WeakKeyDictionary: it would
# compare tensors with ==.
_transposed: dict[int, tuple[weakref.ref, int, int, Tensor]] = {}


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, SOURCE)


def fused_decode_applies(tokens: Tensor, state: Tensor, *weights: Tensor | None) -> bool:
    """Whether `decode_token_cpu` can take this step: CPU tensors, the floating ones of one
    dtype, fp32 or fp64; no autograd; the kernel built. Shapes are checked by the kernel."""
    dtype = state.dtype
    if (
        dtype not in (torch.float32, torch.float64)
        or state.device.type != "cpu"
        or tokens.device.type != "cpu"
    ):
        return False
    tensors = [state, *(w for w in weights if w is not None)]
    return (
        all(t.dtype == dtype and t.device.type == "cpu" for t in tensors)
        and state.is_contiguous()
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and _kernel() is not None
    )


def transposed_encoder_v(encoder_v: Tensor) -> Tensor:
    """encoder_v [H, D, N] as a contiguous [H, N, D], cached while the weight is unchanged."""
    key = id(encoder_v)
    cached = _transposed.get(key)
    if (
        cached is None
        or cached[0]() is not encoder_v
        or cached[1:3] != (encoder_v.data_ptr(), encoder_v._version)
    ):
        owner = weakref.ref(encoder_v, lambda _, key=key: _transposed.pop(key, None))
        transposed = encoder_v.detach().transpose(1, 2).contiguous()
        cached = (owner, encoder_v.data_ptr(), encoder_v._version, transposed)
        _transposed[key] = cached
    return cached[3]


def decode_token_cpu(
    tokens: Tensor,
    state: Tensor,
    embed: Tensor,
    encoder: Tensor,
    encoder_v: Tensor,
    decoder: Tensor,
    lm_head: Tensor,
    phasors: Tensor,
    decay: Tensor | None = None,
) -> Tensor:
    """`decode_token_torch` in one C++ call; same arguments and result (a token out of
    range raises RuntimeError, as `F.embedding` raises IndexError)."""
    rope = torch.view_as_real(phasors.contiguous())  # [N / 2, 2]: cos, sin of each pair
    out = _kernel().decode_token(
        tokens.long().contiguous(), state, embed.contiguous(), encoder.contiguous(),
        transposed_encoder_v(encoder_v), decoder.contiguous(), lm_head.contiguous(),
        rope.to(state.dtype), None if decay is None else decay.contiguous(),
    )  # fmt: skip
    # written through a raw pointer: tell autograd, so that a graph that saved the state
    # fails on backward as it would after the twin's in-place update
    torch.autograd.graph.increment_version(state)
    return out
