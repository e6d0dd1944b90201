"""The family registry: every family implements the interface, and its declarations hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bdh.errors import ConfigError
from bdh.registry import (
    FAMILY_MEMBERS,
    MODEL_TYPES,
    build_model_from_preset,
    check_family,
    family,
    max_context,
    model_class,
    register_family,
)


@pytest.fixture(params=sorted(MODEL_TYPES))
def model(request) -> nn.Module:
    torch.manual_seed(0)
    return build_model_from_preset(request.param, "tiny", vocab_size=32)


def test_every_family_declares_the_interface(model) -> None:
    assert check_family(type(model)) is type(model)
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for site in model.plastic_sites:
        assert site.param in params and site.layout in ("heads", "linear", "matmul")
        for probe in (site.pre, site.post):
            assert all(name in modules for name in probe.modules)
    assert set(model.prunable) <= set(params)
    assert all(isinstance(v, float) for v in model.plasticity_metrics.values())
    assert set(model.sparsity_probes) <= set(model.probe_points)
    assert model.mlp_probe is None or model.mlp_probe in model.probe_points
    for probe in model.probe_points.values():
        assert all(name in modules for name in probe.modules)


def test_declared_probes_fire_once_per_layer(model) -> None:
    calls: dict[str, int] = {}
    handles = []
    for name, probe in model.probe_points.items():

        def count(_module: nn.Module, activity: torch.Tensor, name: str = name) -> None:
            assert isinstance(activity, torch.Tensor)
            calls[name] = calls.get(name, 0) + 1

        handles += probe.hook(model, count)
    model(torch.zeros(1, 5, dtype=torch.long))
    for h in handles:
        h.remove()
    layers = getattr(model.config, "n_layer", 1)
    assert calls == dict.fromkeys(model.probe_points, layers)


def test_context_limit_and_state_bytes(model) -> None:
    limit = max_context(model)
    assert limit == (model.config.block_size if model.context_field else None)
    state = model.init_state(2)
    allocated = sum(
        t.numel() * t.element_size() for t in vars(state).values() if torch.is_tensor(t)
    )
    assert state.nbytes() == allocated
    _, state = model.prefill(torch.zeros(2, 4, dtype=torch.long), state)
    expected = allocated if limit is None else allocated * 4 // limit
    assert state.used_nbytes() == expected


def test_a_class_lacking_a_member_is_refused() -> None:
    cls = model_class("bdh")
    members = {name: getattr(cls, name) for name in FAMILY_MEMBERS}
    for missing in ("plastic_sites", "context_field", "step"):
        broken = type("Broken", (nn.Module,), {k: v for k, v in members.items() if k != missing})
        with pytest.raises(ConfigError, match=f"Broken is not a model family: it lacks {missing}"):
            register_family("broken", broken)
        with pytest.raises(ConfigError, match="lacks"):
            family(broken())
    assert "broken" not in MODEL_TYPES
    with pytest.raises(ConfigError, match="Linear is not a model family"):
        max_context(nn.Linear(2, 2))
