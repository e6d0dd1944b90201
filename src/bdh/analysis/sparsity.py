"""How many neurons fire: per layer, head and token, and the distribution of those rates.

A neuron is active when its output is not exactly zero. For BDH's ReLU neurons that
means positive; a GELU is nonzero almost everywhere, so a Transformer MLP reads ~100%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor


@dataclass
class SparsityStats:
    """Fractions of active units in [0, 1].

    per_layer [L]; per_head [L, H]; per_token [L, T] (mean over batch and heads);
    neuron_rate [L, H, N]: fraction of tokens on which each neuron fires;
    histogram: counts of per-(layer, head, token) active fractions over `bin_edges`.
    """

    per_layer: np.ndarray
    per_head: np.ndarray
    per_token: np.ndarray
    neuron_rate: np.ndarray
    overall: float
    dead_fraction: float
    histogram: np.ndarray
    bin_edges: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall_active": self.overall,
            "dead_neuron_fraction": self.dead_fraction,
            "per_layer_active": self.per_layer.tolist(),
            "per_head_active": self.per_head.tolist(),
            "per_token_active": self.per_token.tolist(),
            "active_fraction_histogram": {
                "counts": self.histogram.tolist(),
                "bin_edges": self.bin_edges.tolist(),
            },
        }


def active_fraction(acts: Tensor) -> np.ndarray:
    """Share of non-zero units of acts [..., N] per row: [...] in [0, 1] (float64)."""
    return (acts != 0).double().mean(dim=-1).numpy()


def sparsity_stats(acts: Tensor, bins: int = 20) -> SparsityStats:
    """Statistics of activity acts [L, B, H, T, N] (e.g. `Activations["x"]`)."""
    active = (acts != 0).double().numpy()  # L, B, H, T, N
    per_cell = active_fraction(acts)  # L, B, H, T
    hist, edges = np.histogram(per_cell.ravel(), bins=bins, range=(0.0, 1.0))
    neuron_rate = active.mean(axis=(1, 3))  # L, H, N
    return SparsityStats(
        per_layer=active.mean(axis=(1, 2, 3, 4)),
        per_head=active.mean(axis=(1, 3, 4)),
        per_token=per_cell.mean(axis=(1, 2)),
        neuron_rate=neuron_rate,
        overall=float(active.mean()),
        dead_fraction=float((neuron_rate == 0).mean()),
        histogram=hist,
        bin_edges=edges,
    )
