"""Registry of the toolkit's model families, by the `model_type` stored in checkpoints.

Every model takes `idx [B, T]` (and optional targets) to `(logits, loss)` and exposes
`init_state`, `prefill` and `step` for generation. Families are imported on demand.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from bdh.errors import ConfigError

MODEL_TYPES: dict[str, str] = {
    "bdh": "bdh.model:BDH",
    "neuro": "bdh.neuro:BDHNeuro",
    "gpt": "bdh.baselines.gpt:GPT",
}


def model_class(model_type: str) -> type[nn.Module]:
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"unknown model type {model_type!r}; choose one of: {', '.join(MODEL_TYPES)}")
    module_name, class_name = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


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
