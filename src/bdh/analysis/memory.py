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

from bdh.errors import BDHError
from bdh.registry import family, max_context


def _with_context(model: nn.Module, length: int) -> nn.Module:
    """The same architecture with room for `length` positions (weights fresh: the state's
    size does not depend on their values)."""
    config = dataclasses.replace(model.config, **{family(model).context_field: length})
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
        rows.append({
            "tokens": T,
            "allocated_bytes": state.nbytes(),
            "used_bytes": state.used_nbytes(),
            "extended_context": extended,
        })  # fmt: skip
    return rows
