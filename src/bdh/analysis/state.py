"""The recurrent state rho over a prompt: snapshots, norms, effective rank, footprint.

For BDH, rho of a layer and head is the [N, D] matrix sum_s rope(x_s)^T v_s that linear
attention reads; it is updated token by token through `model.step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bdh.analysis.capture import require_bdh_analyses
from bdh.errors import BDHError


def effective_rank(matrices: Tensor, eps: float = 1e-12) -> Tensor:
    """Entropy effective rank (Roy & Vetterli 2007) of matrices [..., M, K] -> [...].

    exp(H(p)) with p = s / sum(s) over the singular values s; r equal singular values
    give exactly r, and a zero matrix gives 0.
    """
    s = torch.linalg.svdvals(matrices.float())
    total = s.sum(dim=-1, keepdim=True)
    p = s / total.clamp_min(eps)
    entropy = -(p * torch.log(p.clamp_min(eps))).sum(dim=-1)
    return torch.where(total.squeeze(-1) > eps, entropy.exp(), torch.zeros_like(entropy))


def numerical_rank(matrices: Tensor, rtol: float = 1e-4) -> Tensor:
    """Count of singular values above rtol * the largest, for matrices [..., M, K] -> [...].

    rtol suits float32 states, whose rounding noise sits near 1e-7 of the largest value.
    """
    s = torch.linalg.svdvals(matrices.float())
    top = s[..., :1]
    return ((s > rtol * top) & (top > 0)).sum(dim=-1)


@dataclass
class StateTrajectory:
    """rho after each token of a prompt.

    norm [T, L, H] (Frobenius); eff_rank [T, L, H]; snapshots [T, N, D] of (layer, head);
    nbytes: the state's size in bytes (the same after every token).
    """

    tokens: list[int]
    norm: np.ndarray
    eff_rank: np.ndarray
    snapshots: np.ndarray
    layer: int
    head: int
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "layer": self.layer,
            "head": self.head,
            "state_bytes": self.nbytes,
            "final_norm": self.norm[-1].tolist(),
            "final_effective_rank": self.eff_rank[-1].tolist(),
            "norm_per_token": self.norm.tolist(),
            "effective_rank_per_token": self.eff_rank.tolist(),
        }


@torch.no_grad()
def state_trajectory(
    model: nn.Module, ids: list[int], layer: int = 0, head: int = 0
) -> StateTrajectory:
    """Feed ids one token at a time through `model.step` and record rho after each."""
    if not ids:
        raise BDHError("the prompt is empty: give at least one token")
    require_bdh_analyses(model, "the state trajectory's model")
    c = model.config
    if not (0 <= layer < c.n_layer and 0 <= head < c.n_head):
        raise BDHError(
            f"layer/head ({layer}, {head}) out of range for {c.n_layer} layers, {c.n_head} heads"
        )
    device = next(model.parameters()).device
    state = model.init_state(1)
    norms, ranks, snaps = [], [], []
    for token in ids:
        _, state = model.step(torch.tensor([token], device=device), state)
        kv = state.kv[:, 0].float()  # L, H, N, D
        norms.append(kv.flatten(-2).norm(dim=-1).cpu())
        ranks.append(effective_rank(kv).cpu())
        snaps.append(kv[layer, head].cpu())
    return StateTrajectory(
        tokens=list(ids),
        norm=torch.stack(norms).numpy(),
        eff_rank=torch.stack(ranks).numpy(),
        snapshots=torch.stack(snaps).numpy(),
        layer=layer,
        head=head,
        nbytes=state.nbytes(),
    )
