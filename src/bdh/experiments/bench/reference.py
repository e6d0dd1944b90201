"""Loading the official BDH module and building both models on the same weights."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from bdh.config import preset
from bdh.errors import BDHError
from bdh.model import BDH

# Relative logits error tolerated before a benchmark refuses to time (fp32).
AGREEMENT_RTOL = 1e-4


class BenchError(BDHError):
    """A benchmark that cannot run: no official code, or the two models disagree."""


def load_official(path: str | Path) -> ModuleType:
    """Import the official `bdh.py` at `path`."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"official BDH code not found at '{path}'; pass --reference PATH to bdh.py")
    name = f"_bdh_official_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # any failure to import user-given code is a user error
        raise BenchError(f"cannot import the official BDH code at '{path}': {err}") from None
    if not hasattr(module, "BDH") or not hasattr(module, "BDHConfig"):
        raise BenchError(f"'{path}' does not define BDH and BDHConfig")
    sys.modules[name] = module
    return module


def official_and_ours(
    preset_name: str,
    reference: str | Path,
    device: str = "cpu",
    seed: int = 0,
    **overrides,
) -> tuple[torch.nn.Module, BDH]:
    """The official model (seeded init) and ours with its state_dict loaded, both on device."""
    official = load_official(reference)
    config = preset(preset_name, **overrides)
    torch.manual_seed(seed)
    ref = official.BDH(official.BDHConfig(**config.to_dict()))
    ours = BDH(config)
    ours.load_state_dict(ref.state_dict())
    return ref.to(device), ours.to(device)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|."""
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def check_agreement(ours: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = AGREEMENT_RTOL) -> float:
    """Raise BenchError unless the two logits agree within rtol; return the error."""
    err = relative_error(ours, ref)
    if not err <= rtol:
        raise BenchError(f"{what}: ours and official logits differ (relative error {err:.2e} > {rtol:.0e})")
    return err
