"""Local learning rules next to backprop: Hebbian (Oja) and delta rules, pruning, homeostasis.

A rule is attached to a model (forward hooks on its probe modules capture pre- and
post-synaptic activity during training forwards; a hook on the model itself reads the
target tokens) and `after_step` is called once per training step, after the optimizer
step when there is one. Each plastic site (a map from pre activity a [m] to post
activity p [k], per layer) has one rule, averaged over the M samples of the step:

1. Oja (sites with rule "oja"; modes "hebbian" and "hybrid"), for each post unit j:
       dW_j = hebbian_lr * (mean(p_j a) - mean(p_j^2) W_j)      (W_j: the weights into unit j)
   The decay term keeps ||W_j|| bounded (its fixed point is unit norm for linear units).
2. Softmax delta rule at the readout (rule "delta"; mode "hebbian" only): post are the
   logits, q = softmax(p) and the target token t the teacher:
       dW = readout_lr * s * mean(a (onehot(t) - q)^T)
   (Widrow-Hoff's LMS rule for softmax units: every term sits at the synapse).
3. Predictive rule (rule "predictive"; mode "hebbian" only): post learns to predict the
   next input, the layer-normalized embedding e = LN(E[t]) of the target token, by
   normalized LMS:
       dW = predictive_lr * s * sum(a (e - p)^T) / sum(||a||^2)
   s: the trainer's learning-rate schedule as a fraction of its peak (1 outside it).
4. Homeostatic scaling (Oja sites): each post unit j keeps an activity average r_j (EMA of
   mean |p_j|, decay HOMEOSTASIS_EMA); its incoming weights are multiplied by
   clamp((mean_i r_i / r_j) ** HOMEOSTASIS_RATE, 1 - HOMEOSTASIS_MAX_STEP, 1 + HOMEOSTASIS_MAX_STEP),
   so over-active units weaken and quiet ones strengthen, the population mean staying put.
5. Pruning: every `prune_every` steps, entries of the prunable matrices with
   |w| <= prune_threshold join a persistent mask; the mask is re-applied after every
   step, so pruned synapses stay zero whatever the optimizer or the Hebbian rule does.

No rule reads a gradient: in mode "hebbian" the trainer never calls backward. Each model
family declares its plastic sites (weight, layout, probes, rule) and prunable matrices
(`bdh.registry.ModelFamily`); a parameter that is no site stays as initialized in mode
"hebbian" (BDH: the token embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bdh.errors import ConfigError
from bdh.registry import PlasticSite, family

LEARNING_MODES = ("backprop", "hebbian", "hybrid")
# Peak rates of the delta rules (mode "hebbian"), tuned on tiny BDH over 200 steps.
READOUT_LR = 1.0
PREDICTIVE_LR = 2.0
HOMEOSTASIS_EMA = 0.9
HOMEOSTASIS_RATE = 0.1
HOMEOSTASIS_MAX_STEP = 0.05
EPS = 1e-8


@dataclass
class Site:
    """One plastic weight and this step's sums of its activity (see the module docstring).

    layout "heads": W [H, m, k] with post = pre @ W[h] (BDH); "linear": W [k, m] with
    post = W @ pre (nn.Linear); "matmul": W [m, k] with post = pre @ W.
    """

    name: str
    param: nn.Parameter
    layout: str
    rule: str = "oja"
    teacher: Tensor | None = None  # the embedding [vocab, k] of rule "predictive"
    cross: Tensor | None = None  # sum over samples of the rule's pre x post term, in W's layout
    post_sq: Tensor | None = None  # sum of p^2 per post unit
    post_abs: Tensor | None = None  # sum of |p| per post unit
    pre_sq: float = 0.0  # sum of ||a||^2 (rule "predictive")
    post_zero: float = 0.0  # count of exactly-zero post entries
    post_total: float = 0.0
    samples: int = 0
    targets: Tensor | None = field(default=None, repr=False)  # this forward's target tokens
    # the latest "pre" and "post" activity of the current use, until both have fired
    latest: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def reset(self) -> None:
        self.cross = self.post_sq = self.post_abs = None
        self.pre_sq = self.post_zero = self.post_total = 0.0
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
        """pre [..., m], post [..., k] (heads: pre [B, H or 1, T, m], post [B, H, T, k])."""
        pre, post = pre.detach().float(), post.detach().float()
        if self.rule != "oja":
            if self.targets is None:  # a training forward without targets teaches nothing
                return
            self._record_delta(pre, post)
        elif self.layout == "heads":
            H = post.shape[1]
            pre = pre.expand(-1, H, -1, -1)
            cross = torch.einsum("bhtm,bhtk->hmk", pre, post) if with_cross else None
            self._add_stats(cross, post.pow(2).sum(dim=(0, 2)), post.abs().sum(dim=(0, 2)))
            self.samples += post.shape[0] * post.shape[2]
        else:
            pre2, post2 = pre.reshape(-1, pre.shape[-1]), post.reshape(-1, post.shape[-1])
            cross = None
            if with_cross:  # in W's layout: [k, m] (linear) or [m, k] (matmul)
                cross = post2.t() @ pre2 if self.layout == "linear" else pre2.t() @ post2
            self._add_stats(cross, post2.pow(2).sum(dim=0), post2.abs().sum(dim=0))
            self.samples += post2.shape[0]
        self.post_zero += float((post == 0).sum())
        self.post_total += post.numel()

    def _record_delta(self, pre: Tensor, post: Tensor) -> None:
        """Sum of a (teacher - post)^T over the use's samples, one per target token."""
        pre2, post2 = pre.reshape(-1, pre.shape[-1]), post.reshape(-1, post.shape[-1])
        targets = self.targets.reshape(-1)
        if self.rule == "delta":
            error = torch.nn.functional.one_hot(targets, post2.shape[-1]).float() - post2.softmax(
                -1
            )
        else:
            embedded = self.teacher.detach().float()[targets]
            error = torch.nn.functional.layer_norm(embedded, embedded.shape[-1:]) - post2
            self.pre_sq += float(pre2.pow(2).sum())
        self._add_stats(pre2.t() @ error, post2.pow(2).sum(dim=0), post2.abs().sum(dim=0))
        self.samples += pre2.shape[0]

    def _add_stats(self, cross: Tensor | None, sq: Tensor, ab: Tensor) -> None:
        self.cross = _add(self.cross, cross)
        self.post_sq = _add(self.post_sq, sq)
        self.post_abs = _add(self.post_abs, ab)

    def scale_incoming(self, factor: Tensor) -> None:
        """Multiply the weights into each post unit by factor ([H, k] or [k])."""
        unit_axis = 0 if self.layout == "matmul" else 1  # where factor broadcasts along
        self.param.mul_(factor.unsqueeze(unit_axis).to(self.param.dtype))


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
        readout_lr: float = READOUT_LR,
        predictive_lr: float = PREDICTIVE_LR,
    ):
        if mode not in LEARNING_MODES:
            raise ConfigError(
                f"learning mode must be one of {', '.join(LEARNING_MODES)}, got {mode!r}"
            )
        if mode != "backprop" and not hebbian_lr > 0:
            raise ConfigError(f"hebbian_lr must be > 0 in {mode} mode, got {hebbian_lr}")
        if prune_every < 0 or prune_threshold < 0:
            raise ConfigError("prune_every and prune_threshold must be >= 0")
        if readout_lr < 0 or predictive_lr < 0:
            raise ConfigError("readout_lr and predictive_lr must be >= 0")
        self.mode = mode
        self.hebbian_lr = hebbian_lr
        self.readout_lr = readout_lr
        self.predictive_lr = predictive_lr
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

    def _applies(self, rule: str) -> bool:
        """Whether sites with this rule learn in this mode: the delta rules stand in for
        backprop, so they act in mode "hebbian" only."""
        return self.hebbian if rule == "oja" else self.mode == "hebbian"

    def attach(self, model: nn.Module) -> None:
        """Install the activity hooks (when a Hebbian or homeostatic rule needs them)."""
        self.detach()
        specs = [
            spec
            for spec in family(model).plastic_sites
            if self._applies(spec.rule) or (spec.rule == "oja" and self.homeostatic_scaling)
        ]
        self.sites = {}
        for spec in specs:
            if spec.rule != "oja" and spec.layout != "matmul":
                raise ConfigError(
                    f"plastic site {spec.param!r}: rule {spec.rule!r} needs layout 'matmul'"
                )
            teacher = None if spec.teacher is None else model.get_parameter(spec.teacher)
            if spec.rule == "predictive" and teacher is None:
                raise ConfigError(f"plastic site {spec.param!r}: rule 'predictive' needs a teacher")
            param = model.get_parameter(spec.param)
            self.sites[spec.param] = Site(spec.param, param, spec.layout, spec.rule, teacher)
        self._prunable = prunable_parameters(model)
        if self.sites:
            for spec in specs:
                site = self.sites[spec.param]
                self._handles += _install(model, spec, site, self._applies(spec.rule))
            # a forward starts every pairing afresh: halves of an earlier forward never pair
            self._handles.append(
                model.register_forward_pre_hook(self._new_forward, with_kwargs=True)
            )

    def _new_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        targets = args[1] if len(args) > 1 else kwargs.get("targets")
        for site in self.sites.values():
            site.latest.clear()
            site.targets = targets

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def after_step(
        self, model: nn.Module, step: int, report: bool = True, rate_scale: float = 1.0
    ) -> dict[str, float]:
        """Apply this step's local updates, pruning and masks; returns metrics.

        `rate_scale` multiplies the delta rules' rates (the trainer's schedule as a
        fraction of its peak). With `report` False the model's own activity metrics
        (which may cost an SVD) are not read: the step's metrics will not be logged.
        """
        metrics: dict[str, float] = {}
        zero, total = 0.0, 0.0
        for site in self.sites.values():
            if site.rule == "oja":
                zero, total = zero + site.post_zero, total + site.post_total
        if total:
            metrics["act_sparsity"] = zero / total
        if self.hebbian:
            metrics["hebbian_update"] = self._local_update(rate_scale)
        if self.homeostatic_scaling:
            metrics["homeostatic_spread"] = self._homeostasis()
        for site in self.sites.values():
            site.reset()
            site.targets = None
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

    def _local_update(self, rate_scale: float) -> float:
        """One step of each site's rule, where it saw activity; returns mean ||dW|| / ||W||."""
        ratios = []
        for site in self.sites.values():
            if not site.samples or site.cross is None or not self._applies(site.rule):
                continue
            W = site.param
            if site.rule == "oja":
                # heads: W, cross [H, m, k], post_sq [H, k]; linear: [k, m], [k]; matmul: [m, k], [k]
                unit_axis = 0 if site.layout == "matmul" else 1
                decay = site.post_sq.unsqueeze(unit_axis) * W.float()
                delta = self.hebbian_lr * (site.cross - decay) / site.samples
            elif site.rule == "delta":
                delta = self.readout_lr * rate_scale * site.cross / site.samples
            else:
                delta = self.predictive_lr * rate_scale * site.cross / (site.pre_sq + EPS)
            ratios.append(float(delta.norm() / (W.norm() + EPS)))
            W.add_(delta.to(W.dtype))
        return sum(ratios) / len(ratios) if ratios else 0.0

    def _homeostasis(self) -> float:
        """Scale each unit's incoming weights toward the population's mean activity;
        returns the largest relative deviation of a unit's activity from that mean."""
        spread = 0.0
        for name, site in self.sites.items():
            if not site.samples or site.rule != "oja":
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
    readout_lr: float = READOUT_LR,
    predictive_lr: float = PREDICTIVE_LR,
) -> LearningRule | None:
    """The rule for these settings; None for plain backprop with no pruning or scaling."""
    rule = LearningRule(
        mode,
        hebbian_lr,
        prune_every,
        prune_threshold,
        homeostatic_scaling,
        readout_lr,
        predictive_lr,
    )
    if mode == "backprop" and not prune_every and not homeostatic_scaling:
        return None
    return rule
