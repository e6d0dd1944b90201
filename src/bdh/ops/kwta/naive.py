"""k-winners-take-all masks with `torch.topk`: the reference twin of the CPU kernel."""

from __future__ import annotations

import torch
from torch import Tensor


def kwta_mask_naive(z: Tensor, k: Tensor | int, k_max: int | None = None) -> Tensor:
    """Boolean mask of the k largest entries of each row of z [R, n].

    k: an int, or one count per row [R] (then k_max >= max(k) bounds the selection
    without reading k back from the device). Which of several equal values at the k-th
    place is kept is up to `torch.topk`.
    """
    if isinstance(k, int):  # unsorted: twice as fast on CPU, same set
        idx = torch.topk(z, k, dim=-1, sorted=False).indices
        return torch.zeros_like(z, dtype=torch.bool).scatter_(-1, idx, True)
    if k_max is None:
        k_max = int(k.max())
    idx = torch.topk(z, k_max, dim=-1).indices  # sorted, largest first
    keep = torch.arange(idx.shape[-1], device=z.device) < k.unsqueeze(-1)
    return torch.zeros_like(z, dtype=torch.bool).scatter_(-1, idx, keep)
