"""Turning a user's device name into a usable torch.device."""

from __future__ import annotations

import torch

from bdh.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto', 'cpu', 'cuda', 'cuda:1', ... -> torch.device; a ConfigError when unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available")
    return device
