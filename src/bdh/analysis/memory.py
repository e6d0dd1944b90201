"""Measured inference memory: the bytes of a model's real recurrent state / KV cache
after it has read T tokens, for several T.

BDH's state is a fixed [L, B, H, N, D] tensor. The GPT baseline preallocates a KV cache
of `block_size` positions and fills it as it reads; what a Transformer needs for T tokens
is the filled part, k and v [L, B, H, T, head_dim]. Both numbers are reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from bdh.analysis.state import tensor_nbytes
from bdh.errors import BDHError


def max_context(model: nn.Module) -> int | None:
    """Longest context a model accepts (None: unbounded, as for BDH)."""
    value = getattr(model.config, "block_size", None)
    return value if isinstance(value, int) else None


def state_bytes(state: Any) -> dict[str, int]:
    """{"allocated": bytes of all state tensors, "used": bytes holding the tokens read}.

    A KV cache (attributes k, v [L, B, H, positions, hd] and `position`) uses its first
    `position` positions; any other state (BDH's rho) uses all of itself.
    """
    allocated = tensor_nbytes(state)
    if all(hasattr(state, a) for a in ("k", "v", "position")):
        used = sum(
            t[..., : state.position, :].numel() * t.element_size() for t in (state.k, state.v)
        )
        return {"allocated": allocated, "used": used}
    return {"allocated": allocated, "used": allocated}


def _with_context(model: nn.Module, length: int) -> nn.Module:
    """The same architecture with room for `length` positions (weights fresh: the state's
    size does not depend on their values)."""
    config = dataclasses.replace(model.config, block_size=length)
    return type(model)(config).to(next(model.parameters()).device).eval()


@torch.no_grad()
def measure_state_memory(
    model: nn.Module, lengths: list[int], seed: int = 0, extend_context: bool = True
) -> list[dict[str, Any]]:
    """[{"tokens", "allocated_bytes", "used_bytes", "extended_context"}] after prefilling
    T random tokens (batch 1) for each T in lengths.

    Beyond a model's context limit, `extend_context` measures the same architecture built
    with a longer context (extended_context True); otherwise those lengths are skipped.
    """
    if not lengths or min(lengths) < 1:
        raise BDHError("lengths must be positive token counts")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    limit = max_context(model)
    rows = []
    for T in sorted(set(lengths)):
        runner, extended = model, False
        if limit is not None and T > limit:
            if not extend_context:
                continue
            runner, extended = _with_context(model, T), True
        ids = torch.randint(model.config.vocab_size, (1, T), generator=generator).to(device)
        _, state = runner.prefill(ids, runner.init_state(1), all_logits=False)
        size = state_bytes(state)
        rows.append({
            "tokens": T,
            "allocated_bytes": size["allocated"],
            "used_bytes": size["used"],
            "extended_context": extended,
        })  # fmt: skip
    return rows
