"""k-winners-take-all masks (the neuro model's k-WTA on y and on x).

- `naive`: `torch.topk` and a scatter, the reference.
- `cpu`: a C++ radix select per row, built on first use; on CPU when it could be built.

`kwta_mask` picks one; their masks are equal, ties included: the kernel hands rows whose
k-th value is tied to `torch.topk` (tests/ops/test_kwta.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bdh.ops.kwta.cpu import kernel_available, kwta_mask_cpu
from bdh.ops.kwta.naive import kwta_mask_naive


def kwta_mask(z: Tensor, k: Tensor | int, k_max: int | None = None) -> Tensor:
    """Boolean mask of the k largest entries of each row of z [R, n] (no gradient).

    k: an int, or one count per row [R]; k_max >= max(k) lets the reference twin bound its
    selection without reading k back from the device.
    """
    z = z.detach()
    on_cpu = z.device.type == "cpu" and z.dim() == 2 and z.is_floating_point()
    if isinstance(k, Tensor):
        on_cpu = on_cpu and k.device.type == "cpu" and not k.is_floating_point()
    if on_cpu and kernel_available():
        if isinstance(k, int):
            return kwta_mask_cpu(z, z.new_empty(0, dtype=torch.long), k, -1)
        return kwta_mask_cpu(z, k, 0, -1 if k_max is None else k_max)
    return kwta_mask_naive(z, k, k_max)


__all__ = ["kernel_available", "kwta_mask", "kwta_mask_cpu", "kwta_mask_naive"]
