"""Registry of the toolkit's model families, by the `model_type` stored in checkpoints,
and the interface every family implements (`ModelFamily`).

Every model takes `idx [B, T]` (and optional targets) to `(logits, loss)` and exposes
`init_state`, `prefill` and `step` for generation. Beyond that, a family declares what
the rest of the toolkit may use: probe points, plastic sites, prunable matrices, its
context limit and which analyses apply. Nothing else branches on a family's name or
reaches for its attribute names. Families are imported on demand and checked against
the interface when looked up.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal, Protocol

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bdh.errors import ConfigError

MODEL_TYPES: dict[str, str | type] = {
    "bdh": "bdh.model:BDH",
    "neuro": "bdh.neuro:BDHNeuro",
    "gpt": "bdh.baselines.gpt:GPT",
}


NO_METRICS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Probe:
    """Where an activity is read during a forward: the output of the submodule(s)
    `modules` (dotted names), or with `input` set, the positional argument #input they
    receive. Several modules (one per layer) are read in call order."""

    modules: tuple[str, ...]
    input: int | None = None

    def __init__(self, modules: str | Sequence[str], input: int | None = None):
        object.__setattr__(
            self, "modules", (modules,) if isinstance(modules, str) else tuple(modules)
        )
        object.__setattr__(self, "input", input)

    def hook(
        self, model: nn.Module, fn: Callable[[nn.Module, Tensor], None]
    ) -> list[RemovableHandle]:
        """Call fn(module, activity) each time one of the modules fires; returns the handles."""
        index = self.input

        def read_output(module: nn.Module, args: tuple, output: Tensor) -> None:
            fn(module, output)

        def read_input(module: nn.Module, args: tuple) -> None:
            fn(module, args[index])

        modules = [model.get_submodule(name) for name in self.modules]
        if index is None:
            return [m.register_forward_hook(read_output) for m in modules]
        return [m.register_forward_pre_hook(read_input) for m in modules]


@dataclass(frozen=True)
class PlasticSite:
    """A weight the local learning rules may change, and where its activity is read.

    param: the parameter's name (`model.get_parameter`). layout "heads": W [H, m, k] with
    post = pre @ W[h] (pre [B, H or 1, T, m], post [B, H, T, k]); "linear": W [k, m] with
    post = W @ pre (nn.Linear); "matmul": W [m, k] with post = pre @ W (pre [..., T, m],
    post [..., T, k], one row per target token). pre/post: the probes of its pre- and
    post-synaptic activity, fired once each per use of the weight (per layer), in either order.
    rule (`bdh.learning`): "oja" (unsupervised, every Hebbian mode), or in mode "hebbian" only
    "delta" (the readout: post are logits, the target token is the teacher) or "predictive"
    (post learns the next input's embedding: row `target` of the parameter `teacher`).
    """

    param: str
    layout: Literal["heads", "linear", "matmul"]
    pre: Probe
    post: Probe
    rule: Literal["oja", "delta", "predictive"] = "oja"
    teacher: str | None = None


class ModelFamily(Protocol):
    """What every registered family declares (class attributes or properties).

    - model_type: its key in checkpoints; config_class: its config dataclass (`PRESETS`).
    - probe_points: named activity probes ("x", "y", ...).
    - sparsity_probes: the probe points whose exact zeros are its activation sparsity.
    - mlp_probe: the probe point of its MLP-like hidden activity per layer (None: none).
    - plastic_sites: the weights of the Hebbian and homeostatic rules.
    - prunable: names of the synapse matrices pruning acts on.
    - plasticity_metrics: metrics of the last training forward that the learning rule
      reports with its own (neuro: rho_F, rho_eff_rank, gain); `NO_METRICS` for none.
    - context_field: the config field bounding its context (None: unbounded); read it
      through `max_context`.
    - bdh_analyses: whether the analyses of `bdh.analysis` apply (BDH-GPU's structure:
      probes x, attn, y, xy once per layer, a state `kv` [L, B, H, N, D], an encoder and
      decoder forming the neuron graph).
    - states: dataclasses deriving from `RecurrentState` (byte counts, batch axes).
    - cpu_bf16_pays: whether precision "auto" picks bf16 autocast on a CPU with native bf16.
    - carries_state: whether `forward(idx, targets, state=...)` continues a state under
      autograd and returns it third (carried-state training, `bdh.train.carry`).
    """

    model_type: ClassVar[str]
    config_class: ClassVar[type]
    context_field: ClassVar[str | None]
    bdh_analyses: ClassVar[bool]
    mlp_probe: ClassVar[str | None]
    sparsity_probes: ClassVar[tuple[str, ...]]
    cpu_bf16_pays: ClassVar[bool]
    carries_state: ClassVar[bool]

    @property
    def probe_points(self) -> Mapping[str, Probe]: ...

    @property
    def plastic_sites(self) -> Sequence[PlasticSite]: ...

    @property
    def prunable(self) -> Sequence[str]: ...

    @property
    def plasticity_metrics(self) -> Mapping[str, float]: ...

    def init_state(
        self, batch_size: int, device: Any = None, dtype: Any = None
    ) -> RecurrentState: ...

    def prefill(
        self, idx: Tensor, state: Any = None, all_logits: bool = True
    ) -> tuple[Tensor, Any]: ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]: ...


FAMILY_MEMBERS: tuple[str, ...] = tuple(
    sorted({*ModelFamily.__annotations__, *(n for n in vars(ModelFamily) if not n.startswith("_"))})
)


def check_family(cls: type) -> type:
    """cls itself, when it implements every `ModelFamily` member; else a ConfigError."""
    missing = [name for name in FAMILY_MEMBERS if not hasattr(cls, name)]
    if missing:
        raise ConfigError(
            f"{cls.__name__} is not a model family: it lacks {', '.join(missing)} "
            "(see bdh.registry.ModelFamily)"
        )
    return cls


def register_family(model_type: str, target: str | type) -> None:
    """Register a family under `model_type`: its class, or "module:Class" imported on demand."""
    if not isinstance(target, str):
        check_family(target)
    MODEL_TYPES[model_type] = target


def family(model: nn.Module) -> ModelFamily:
    """model itself, typed as a family; a ConfigError when its class is not one."""
    check_family(type(model))
    return model  # type: ignore[return-value]


def family_name(model: nn.Module) -> str:
    """The family's model_type, or the class name of a model that is no family."""
    return getattr(type(model), "model_type", type(model).__name__)


def max_context(model: nn.Module) -> int | None:
    """Longest context a model accepts (None: unbounded, as for BDH)."""
    field = family(model).context_field
    return None if field is None else getattr(model.config, field)


def model_class(model_type: str) -> type[nn.Module]:
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"unknown model type {model_type!r}; choose one of: {', '.join(MODEL_TYPES)}"
        )
    target = MODEL_TYPES[model_type]
    if isinstance(target, str):
        module_name, class_name = target.split(":")
        target = getattr(importlib.import_module(module_name), class_name)
    return check_family(target)


def build_model(model_type: str, config: dict[str, Any]) -> nn.Module:
    cls = model_class(model_type)
    return cls(cls.config_class.from_dict(config))


def model_presets(model_type: str) -> dict[str, dict[str, Any]]:
    """Named configs of a family: `PRESETS` on its config class (BDH: `bdh.config.PRESETS`)."""
    return getattr(model_class(model_type).config_class, "PRESETS", {})


def build_model_from_preset(model_type: str, preset: str, **overrides: Any) -> nn.Module:
    presets = model_presets(model_type)
    if preset not in presets:
        raise ConfigError(
            f"unknown {model_type} preset {preset!r}; choose one of: {', '.join(presets) or '(none)'}"
        )
    return build_model(model_type, {**presets[preset], **overrides})


# ---- recurrent states: one byte count ----------------------------------------------------


def state_tensors(obj: Any) -> list[Tensor]:
    """Every tensor reachable from obj (a state dataclass, tuple, list, dict, tensor)."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in state_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in state_tensors(v)]
    if hasattr(obj, "__dict__"):
        return [t for v in vars(obj).values() for t in state_tensors(v)]
    return []


def tensor_nbytes(obj: Any) -> int:
    """Bytes of every tensor reachable from obj (see `state_tensors`)."""
    return sum(t.numel() * t.element_size() for t in state_tensors(obj))


class RecurrentState:
    """Base of the families' recurrent states (dataclasses with `position`, the tokens
    consumed so far). A state that preallocates positions (a KV cache) declares how many
    in `capacity`; its used bytes are the filled share."""

    position: int
    # Which axis of each tensor field holds the batch's sequences, e.g. {"kv": 1}.
    batch_axes: ClassVar[dict[str, int]]

    @property
    def batch_size(self) -> int:
        """Sequences in the batch: the batch axis of the first field in `batch_axes`."""
        name, axis = next(iter(self.batch_axes.items()))
        return getattr(self, name).shape[axis]

    def detach(self) -> Any:
        """The same state cut from its graph (truncated BPTT between windows)."""
        return dataclasses.replace(self, **{n: getattr(self, n).detach() for n in self.batch_axes})

    @property
    def capacity(self) -> int | None:
        """Positions the state's tensors preallocate (None: its size does not grow with T)."""
        return None

    def nbytes(self) -> int:
        """Bytes allocated by the state's tensors."""
        return tensor_nbytes(self)

    def used_nbytes(self) -> int:
        """Bytes holding the `position` tokens consumed so far (what a growing cache needs)."""
        total = self.nbytes()
        return total if self.capacity is None else total * self.position // self.capacity
