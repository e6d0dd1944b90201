"""Activation capture through forward hooks on the probe points a model family declares.

BDH's layers share one set of weights, so each of its probes (x, attn, y, xy) fires once
per layer per forward pass: the k-th call of a forward is layer k. Other families are read
through the probe point they declare as their MLP hidden activity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bdh.errors import BDHError
from bdh.registry import Probe, family, family_name

# The signals of BDH-GPU's layers (its probe points):
#   x     x_sparse = relu(x @ encoder)            [B, H, T, N]
#   attn  LN(linear attention output)             [B, H, T, D]
#   y     y_sparse = relu(attn @ encoder_v)       [B, H, T, N]
#   xy    x_sparse * y_sparse, before dropout     [B, H, T, N]
BDH_SIGNALS = ("x", "attn", "y", "xy")


def require_bdh_analyses(model: nn.Module, what: str) -> None:
    """A BDHError unless `model`'s family declares that the BDH analyses apply."""
    if not family(model).bdh_analyses:
        raise BDHError(f"{what} must be a BDH checkpoint, got model type {family_name(model)!r}")


@dataclass
class Activations:
    """Per-layer activity of one forward pass.

    signals: name -> tensor [L, B, H, T, width] (width N for x, y, xy; D for attn).
    tokens: the input ids [B, T].
    """

    signals: dict[str, Tensor]
    tokens: Tensor

    def __getitem__(self, name: str) -> Tensor:
        return self.signals[name]

    @property
    def n_layer(self) -> int:
        return next(iter(self.signals.values())).shape[0]


@contextmanager
def _hooks(
    probes: dict[str, Probe], model: nn.Module, store: dict[str, list[Tensor]]
) -> Iterator[None]:
    handles = []
    for name, probe in probes.items():
        calls = store[name] = []

        def hook(_mod: nn.Module, out: Tensor, calls: list[Tensor] = calls) -> None:
            # fp64 stays fp64 (exact checks of readouts); other dtypes are read as fp32.
            dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
            calls.append(out.detach().to(dtype).cpu())

        handles += probe.hook(model, hook)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def capture_activations(
    model: nn.Module, idx: Tensor, signals: tuple[str, ...] = BDH_SIGNALS
) -> Activations:
    """Run BDH on idx [B, T] (parallel form) and return each probe's output per layer."""
    unknown = [s for s in signals if s not in BDH_SIGNALS]
    if unknown:
        raise BDHError(f"unknown signal(s) {unknown}; choose from {list(BDH_SIGNALS)}")
    require_bdh_analyses(model, "the probed model")
    store: dict[str, list[Tensor]] = {}
    n_layer = model.config.n_layer
    with _hooks({s: model.probe_points[s] for s in signals}, model, store):
        model(idx)
    out = {}
    for name, calls in store.items():
        if len(calls) != n_layer:
            raise RuntimeError(f"probe {name} fired {len(calls)} times for {n_layer} layers")
        out[name] = torch.stack(calls)
    return Activations(signals=out, tokens=idx.detach().cpu())


@torch.no_grad()
def capture_mlp_activations(model: nn.Module, idx: Tensor) -> Tensor:
    """Hidden MLP activity per layer, [L, B, 1, T, width], for any model family.

    The family's declared `mlp_probe`, one call per layer. BDH: x_sparse * y_sparse (its
    MLP-like sparse product, heads laid side by side); the GPT baseline: GELU output
    [B, T, 4d].
    """
    name = family(model).mlp_probe
    if name is None:
        raise BDHError(f"model type {family_name(model)!r} declares no MLP activity probe")
    store: dict[str, list[Tensor]] = {}
    with _hooks({name: model.probe_points[name]}, model, store):
        model(idx)
    calls = store[name]
    if not calls:
        raise BDHError("no MLP activity probe fired during the forward pass")
    # [B, H, T, N] (heads side by side: [B, T, H * N]) or [B, T, width], to [B, 1, T, width]
    rows = [c.transpose(1, 2) if c.dim() == 4 else c for c in calls]
    return torch.stack([r.reshape(r.shape[0], 1, r.shape[1], -1) for r in rows])
