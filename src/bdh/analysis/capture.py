"""Activation capture through forward hooks.

BDH exposes identity probe modules (`probe_x`, `probe_attn`, `probe_y`, `probe_xy`).
The layers share one set of weights, so each probe fires once per layer per forward
pass: the k-th call of a forward is layer k. The Transformer baseline is read through
its per-block `probe_mlp_hidden` modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bdh.errors import BDHError

# Signal name -> probe module attribute on BDH.
BDH_PROBES: dict[str, str] = {
    "x": "probe_x",  # x_sparse = relu(x @ encoder)            [B, H, T, N]
    "attn": "probe_attn",  # LN(linear attention output)      [B, H, T, D]
    "y": "probe_y",  # y_sparse = relu(attn @ encoder_v)       [B, H, T, N]
    "xy": "probe_xy",  # x_sparse * y_sparse, before dropout   [B, H, T, N]
}


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
def _hooks(modules: dict[str, nn.Module], store: dict[str, list[Tensor]]) -> Iterator[None]:
    handles = []
    for name, module in modules.items():
        store[name] = []

        def hook(_mod: nn.Module, _inp: object, out: Tensor, name: str = name) -> None:
            store[name].append(out.detach().float().cpu())

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def capture_activations(
    model: nn.Module, idx: Tensor, signals: tuple[str, ...] = ("x", "attn", "y", "xy")
) -> Activations:
    """Run BDH on idx [B, T] (parallel form) and return each probe's output per layer."""
    unknown = [s for s in signals if s not in BDH_PROBES]
    if unknown:
        raise BDHError(f"unknown signal(s) {unknown}; choose from {list(BDH_PROBES)}")
    if not all(hasattr(model, BDH_PROBES[s]) for s in signals):
        raise BDHError(
            f"model type {getattr(model, 'model_type', '?')!r} has no BDH activity probes"
        )
    store: dict[str, list[Tensor]] = {}
    n_layer = model.config.n_layer
    with _hooks({s: getattr(model, BDH_PROBES[s]) for s in signals}, store):
        model(idx)
    out = {}
    for name, calls in store.items():
        if len(calls) != n_layer:
            raise RuntimeError(f"probe {name} fired {len(calls)} times for {n_layer} layers")
        out[name] = torch.stack(calls)
    return Activations(signals=out, tokens=idx.detach().cpu())


def _activation_modules(model: nn.Module) -> list[nn.Module]:
    """MLP hidden probes (`probe_mlp_hidden`, one per block) or else activation modules."""
    probes = [m for name, m in model.named_modules() if name.endswith("probe_mlp_hidden")]
    if probes:
        return probes
    kinds = (nn.GELU, nn.ReLU, nn.SiLU)
    return [m for m in model.modules() if isinstance(m, kinds)]


@torch.no_grad()
def capture_mlp_activations(model: nn.Module, idx: Tensor) -> Tensor:
    """Hidden MLP activity per layer, [L, B, 1, T, width], for any model family.

    BDH: x_sparse * y_sparse (its MLP-like sparse product, heads laid side by side).
    Others: their `probe_mlp_hidden` modules (the GPT baseline: GELU output [B, T, 4d]),
    or else their activation-function modules (GELU/ReLU/SiLU), in call order.
    """
    if hasattr(model, "probe_xy"):
        xy = capture_activations(model, idx, ("xy",))["xy"]  # L, B, H, T, N
        L, B, H, T, N = xy.shape
        return xy.permute(0, 1, 3, 2, 4).reshape(L, B, 1, T, H * N)
    modules = _activation_modules(model)
    if not modules:
        raise BDHError(
            f"model type {getattr(model, 'model_type', '?')!r} has no activation modules to hook"
        )
    store: dict[str, list[Tensor]] = {}
    with _hooks({str(i): m for i, m in enumerate(modules)}, store):
        model(idx)
    calls = [t for i in range(len(modules)) for t in store[str(i)]]
    if not calls:
        raise BDHError("no activation module fired during the forward pass")
    return torch.stack([c.reshape(c.shape[0], 1, c.shape[1], -1) for c in calls])
