"""Local learning rules next to backprop: Hebbian (Oja) updates, pruning, homeostasis.

A rule is attached to a model (forward hooks on its probe modules capture pre- and
post-synaptic activity during training forwards) and `after_step` is called once per
training step, after the optimizer step when there is one:

1. Hebbian, modes "hebbian" and "hybrid": every plastic weight W (a map from pre
   activity a [m] to post activity p [k] of one layer) moves by Oja's rule,
   averaged over the M (sequence, token, layer) samples of the step:
       dW_j = hebbian_lr * (mean(p_j a) - mean(p_j^2) W_j)      (W_j: the weights into unit j)
   The decay term keeps ||W_j|| bounded (its fixed point is unit norm for linear units).
2. Homeostatic scaling: each post unit j keeps an activity average r_j (EMA of
   mean |p_j|, decay HOMEOSTASIS_EMA); its incoming weights are multiplied by
   clamp((mean_i r_i / r_j) ** HOMEOSTASIS_RATE, 1 - HOMEOSTASIS_MAX_STEP, 1 + HOMEOSTASIS_MAX_STEP),
   so over-active units weaken and quiet ones strengthen, the population mean staying put.
3. Pruning: every `prune_every` steps, entries of the prunable matrices with
   |w| <= prune_threshold join a persistent mask; the mask is re-applied after every
   step, so pruned synapses stay zero whatever the optimizer or the Hebbian rule does.

Plastic and prunable weights per model family are listed in `SITES` and `PRUNABLE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bdh.errors import ConfigError

LEARNING_MODES = ("backprop", "hebbian", "hybrid")
HOMEOSTASIS_EMA = 0.9
HOMEOSTASIS_RATE = 0.1
HOMEOSTASIS_MAX_STEP = 0.05
EPS = 1e-8


@dataclass
class Site:
    """One plastic weight. `per_head`: W is [H, m, k] with post = pre @ W[h] (BDH);
    otherwise W is [k, m] with post = W @ pre (nn.Linear layout)."""

    name: str
    param: nn.Parameter
    per_head: bool
    cross: Tensor | None = None  # sum over samples of p a^T, in W's layout
    post_sq: Tensor | None = None  # sum of p^2 per post unit
    post_abs: Tensor | None = None  # sum of |p| per post unit
    post_zero: float = 0.0  # count of exactly-zero post entries
    post_total: float = 0.0
    samples: int = 0
    pending: Tensor | None = field(default=None, repr=False)  # first half of a pre/post pair

    def reset(self) -> None:
        self.cross = self.post_sq = self.post_abs = None
        self.post_zero = self.post_total = 0.0
        self.samples = 0
        self.pending = None

    def record(self, pre: Tensor, post: Tensor, with_cross: bool) -> None:
        """pre [..., m], post [..., k] (per_head: pre [B, H or 1, T, m], post [B, H, T, k])."""
        pre, post = pre.detach().float(), post.detach().float()
        if self.per_head:
            H = post.shape[1]
            pre = pre.expand(-1, H, -1, -1)
            cross = torch.einsum("bhtm,bhtk->hmk", pre, post) if with_cross else None
            sq = post.pow(2).sum(dim=(0, 2))  # H, k
            ab = post.abs().sum(dim=(0, 2))
            samples = post.shape[0] * post.shape[2]
        else:
            pre2, post2 = pre.reshape(-1, pre.shape[-1]), post.reshape(-1, post.shape[-1])
            cross = post2.t() @ pre2 if with_cross else None  # k, m
            sq = post2.pow(2).sum(dim=0)
            ab = post2.abs().sum(dim=0)
            samples = post2.shape[0]
        self.cross = _add(self.cross, cross)
        self.post_sq = _add(self.post_sq, sq)
        self.post_abs = _add(self.post_abs, ab)
        self.post_zero += float((post == 0).sum())
        self.post_total += post.numel()
        self.samples += samples

    def scale_incoming(self, factor: Tensor) -> None:
        """Multiply the weights into each post unit by factor ([H, k] or [k]); in both
        layouts the unit axis is the one factor.unsqueeze(1) broadcasts along."""
        self.param.mul_(factor.unsqueeze(1).to(self.param.dtype))


def _add(total: Tensor | None, value: Tensor | None) -> Tensor | None:
    if value is None:
        return total
    return value if total is None else total + value


Record = Callable[[Site, Tensor, Tensor], None]
Installer = Callable[[nn.Module, dict[str, Site], Record], list[Any]]


def _pair(
    first: nn.Module, second: nn.Module, site: Site, first_is_pre: bool, record: Record
) -> list[Any]:
    """Hooks recording (pre, post) when `first` then `second` fire in a training forward."""

    def keep(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if module.training:
            site.pending = output

    def emit(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if module.training and site.pending is not None:
            pre, post = (site.pending, output) if first_is_pre else (output, site.pending)
            site.pending = None
            record(site, pre, post)

    return [first.register_forward_hook(keep), second.register_forward_hook(emit)]


def _bdh_hooks(model: nn.Module, sites: dict[str, Site], record: Record) -> list[Any]:
    enc = sites["encoder"]

    def attn_pre(module: nn.Module, args: tuple) -> None:
        # attn(x_sparse [B, H, T, N], x [B, 1, T, D], ...): the encoder maps x to x_sparse
        if module.training:
            record(enc, args[1], args[0])

    return [
        model.attn.register_forward_pre_hook(attn_pre),
        # encoder_v maps LN(attention) [B, H, T, D] to y_sparse [B, H, T, N]
        *_pair(model.probe_attn, model.probe_y, sites["encoder_v"], True, record),
    ]


def _neuro_hooks(model: nn.Module, sites: dict[str, Site], record: Record) -> list[Any]:
    # BDHNeuro calls probe_x, probe_y, then probe_v_in, probe_drive, probe_a.
    return [
        *_pair(model.probe_v_in, model.probe_drive, sites["Dx"], True, record),
        *_pair(model.probe_y, model.probe_a, sites["Dy"], False, record),
    ]


def _gpt_hooks(model: nn.Module, sites: dict[str, Site], record: Record) -> list[Any]:
    handles = []
    for i, block in enumerate(model.blocks):
        site = sites[f"blocks.{i}.c_fc.weight"]
        handles += _pair(block.probe_mlp_in, block.probe_mlp_hidden, site, True, record)
    return handles


def _sites(model: nn.Module) -> tuple[dict[str, tuple[nn.Parameter, bool]], Installer]:
    kind = getattr(model, "model_type", None)
    if kind == "bdh":
        return {"encoder": (model.encoder, True), "encoder_v": (model.encoder_v, True)}, _bdh_hooks
    if kind == "neuro":
        return {"Dx": (model.Dx, False), "Dy": (model.Dy, False)}, _neuro_hooks
    if kind == "gpt":
        return {
            f"blocks.{i}.c_fc.weight": (b.c_fc.weight, False) for i, b in enumerate(model.blocks)
        }, _gpt_hooks
    raise ConfigError(f"no learning rules for model type {kind!r}")


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The synapse matrices pruning acts on (embeddings, norms and readouts are kept)."""
    kind = getattr(model, "model_type", None)
    params = dict(model.named_parameters())
    if kind == "bdh":
        names = ["encoder", "encoder_v", "decoder"]
    elif kind == "neuro":
        names = ["E", "Dx", "Dy"]
    elif kind == "gpt":
        names = [n for n, p in params.items() if n.startswith("blocks.") and p.dim() == 2]
    else:
        raise ConfigError(f"no pruning rule for model type {kind!r}")
    return {n: params[n] for n in names}


class LearningRule:
    """Hebbian/hybrid updates, pruning and homeostatic scaling (see the module docstring)."""

    def __init__(
        self,
        mode: str = "backprop",
        hebbian_lr: float = 0.01,
        prune_every: int = 0,
        prune_threshold: float = 0.01,
        homeostatic_scaling: bool = False,
    ):
        if mode not in LEARNING_MODES:
            raise ConfigError(
                f"learning mode must be one of {', '.join(LEARNING_MODES)}, got {mode!r}"
            )
        if mode != "backprop" and not hebbian_lr > 0:
            raise ConfigError(f"hebbian_lr must be > 0 in {mode} mode, got {hebbian_lr}")
        if prune_every < 0 or prune_threshold < 0:
            raise ConfigError("prune_every and prune_threshold must be >= 0")
        self.mode = mode
        self.hebbian_lr = hebbian_lr
        self.prune_every = prune_every
        self.prune_threshold = prune_threshold
        self.homeostatic_scaling = homeostatic_scaling
        self.sites: dict[str, Site] = {}
        self.masks: dict[str, Tensor] = {}
        self.activity: dict[str, Tensor] = {}
        self._prunable: dict[str, nn.Parameter] = {}
        self._handles: list[Any] = []

    @property
    def uses_backprop(self) -> bool:
        return self.mode != "hebbian"

    @property
    def hebbian(self) -> bool:
        return self.mode in ("hebbian", "hybrid")

    def attach(self, model: nn.Module) -> None:
        """Install the activity hooks (when a Hebbian or homeostatic rule needs them)."""
        self.detach()
        specs, installer = _sites(model)
        self.sites = {name: Site(name, p, per_head) for name, (p, per_head) in specs.items()}
        self._prunable = prunable_parameters(model)
        if self.hebbian or self.homeostatic_scaling:
            with_cross = self.hebbian

            def record(site: Site, pre: Tensor, post: Tensor) -> None:
                site.record(pre, post, with_cross)

            self._handles = installer(model, self.sites, record)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def after_step(self, model: nn.Module, step: int, report: bool = True) -> dict[str, float]:
        """Apply this step's local updates, pruning and masks; returns metrics.

        With `report` False the model's own activity metrics (which may cost an SVD) are
        not read: the step's metrics will not be logged.
        """
        metrics: dict[str, float] = {}
        zero, total = 0.0, 0.0
        for site in self.sites.values():
            zero, total = zero + site.post_zero, total + site.post_total
        if total:
            metrics["act_sparsity"] = zero / total
        if self.hebbian:
            metrics["hebbian_update"] = self._hebbian_update()
        if self.homeostatic_scaling:
            metrics["homeostatic_spread"] = self._homeostasis()
        for site in self.sites.values():
            site.reset()
        if self.prune_every and step % self.prune_every == 0:
            for name, param in self._prunable.items():
                keep = param.abs() > self.prune_threshold
                self.masks[name] = keep if name not in self.masks else self.masks[name] & keep
        for name, mask in self.masks.items():
            self._prunable[name].mul_(mask.to(self._prunable[name].dtype))
        if self._prunable:
            metrics["weight_sparsity"] = weight_sparsity(self._prunable.values())
        model_metrics = getattr(model, "last_metrics", {}) if report else {}
        for key in ("rho_F", "rho_eff_rank", "gain"):
            if key in model_metrics:
                metrics[key] = model_metrics[key]
        return metrics

    def _hebbian_update(self) -> float:
        """Oja step on every site that saw activity; returns mean ||dW|| / ||W||."""
        ratios = []
        for site in self.sites.values():
            if not site.samples or site.cross is None:
                continue
            W = site.param
            # per head: W, cross [H, m, k], post_sq [H, k]; else W, cross [k, m], post_sq [k]
            decay = site.post_sq.unsqueeze(1) * W.float()
            delta = self.hebbian_lr * (site.cross - decay) / site.samples
            ratios.append(float(delta.norm() / (W.norm() + EPS)))
            W.add_(delta.to(W.dtype))
        return sum(ratios) / len(ratios) if ratios else 0.0

    def _homeostasis(self) -> float:
        """Scale each unit's incoming weights toward the population's mean activity;
        returns the largest relative deviation of a unit's activity from that mean."""
        spread = 0.0
        for name, site in self.sites.items():
            if not site.samples:
                continue
            rate = site.post_abs / site.samples
            ema = self.activity.get(name)
            ema = rate if ema is None else HOMEOSTASIS_EMA * ema + (1 - HOMEOSTASIS_EMA) * rate
            self.activity[name] = ema
            target = ema.mean(dim=-1, keepdim=True)
            factor = ((target + EPS) / (ema + EPS)).pow(HOMEOSTASIS_RATE)
            site.scale_incoming(factor.clamp(1 - HOMEOSTASIS_MAX_STEP, 1 + HOMEOSTASIS_MAX_STEP))
            spread = max(spread, float(((ema - target).abs() / (target + EPS)).max()))
        return spread

    def state_dict(self) -> dict[str, Tensor]:
        """Pruning masks ("mask.<param>") and activity averages ("activity.<site>")."""
        out = {f"mask.{k}": v.clone() for k, v in self.masks.items()}
        out.update({f"activity.{k}": v.clone() for k, v in self.activity.items()})
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore `state_dict()` output; call after `attach` (masks are checked against
        the model's weights and applied at the next `after_step`)."""
        masks, activity = {}, {}
        for key, value in state.items():
            kind, _, name = key.partition(".")
            if kind == "mask" and name in self._prunable:
                param = self._prunable[name]
                if value.shape != param.shape:
                    raise ConfigError(
                        f"pruning mask {name!r} has shape {tuple(value.shape)}, "
                        f"the weight {tuple(param.shape)}"
                    )
                masks[name] = value.to(device=param.device, dtype=torch.bool)
            elif kind == "activity" and name in self.sites:
                activity[name] = value.float().to(self.sites[name].param.device)
            else:
                raise ConfigError(f"learning-rule state entry {key!r} does not fit this model")
        self.masks, self.activity = masks, activity


def weight_sparsity(params: Any) -> float:
    """Fraction of exactly-zero entries over the given tensors."""
    zero = total = 0
    for p in params:
        zero += int((p == 0).sum())
        total += p.numel()
    return zero / total if total else 0.0


def make_learning_rule(
    mode: str = "backprop",
    hebbian_lr: float = 0.01,
    prune_every: int = 0,
    prune_threshold: float = 0.01,
    homeostatic_scaling: bool = False,
) -> LearningRule | None:
    """The rule for these settings; None for plain backprop with no pruning or scaling."""
    rule = LearningRule(mode, hebbian_lr, prune_every, prune_threshold, homeostatic_scaling)
    if mode == "backprop" and not prune_every and not homeostatic_scaling:
        return None
    return rule
