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

Each model family declares its plastic sites (weight, layout, pre- and post-synaptic
probes) and prunable matrices (`bdh.registry.ModelFamily`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bdh.errors import ConfigError
from bdh.registry import PlasticSite, family

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
    # the latest "pre" and "post" activity of the current use, until both have fired
    latest: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def reset(self) -> None:
        self.cross = self.post_sq = self.post_abs = None
        self.post_zero = self.post_total = 0.0
        self.samples = 0
        self.latest.clear()

    def pair(self, role: str, activity: Tensor) -> tuple[Tensor, Tensor] | None:
        """Keep the latest activity of `role` ("pre" or "post"); once both are present,
        hand them over as (pre, post), whichever fired first."""
        self.latest[role] = activity
        if len(self.latest) < 2:
            return None
        return self.latest.pop("pre"), self.latest.pop("post")

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


def _install(model: nn.Module, spec: PlasticSite, site: Site, with_cross: bool) -> list[Any]:
    """Hooks recording (pre, post) of `site` from its two probes in training forwards."""

    def seen(role: str):
        def hook(module: nn.Module, activity: Tensor) -> None:
            if module.training and (pair := site.pair(role, activity)) is not None:
                site.record(*pair, with_cross)

        return hook

    return [*spec.pre.hook(model, seen("pre")), *spec.post.hook(model, seen("post"))]


def prunable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The synapse matrices pruning acts on (embeddings, norms and readouts are kept)."""
    return {name: model.get_parameter(name) for name in family(model).prunable}


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
        specs = family(model).plastic_sites
        self.sites = {
            spec.param: Site(spec.param, model.get_parameter(spec.param), spec.layout == "heads")
            for spec in specs
        }
        self._prunable = prunable_parameters(model)
        if self.hebbian or self.homeostatic_scaling:
            for spec in specs:
                self._handles += _install(model, spec, self.sites[spec.param], self.hebbian)
            # a forward starts every pairing afresh: halves of an earlier forward never pair
            self._handles.append(model.register_forward_pre_hook(self._new_forward))

    def _new_forward(self, module: nn.Module, args: Any) -> None:
        for site in self.sites.values():
            site.latest.clear()

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
        if report:  # the model's metrics may cost an SVD
            metrics.update(family(model).plasticity_metrics)
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
