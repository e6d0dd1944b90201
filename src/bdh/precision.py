"""The precision policy: which autocast dtype a run uses, and the autocast context itself.

Used by training, `bdh bench` and `bdh compare`, so all three pick the same precision.
Weights, optimizer state, loss and evaluation stay fp32; only the forward runs under autocast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from bdh.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_bf16_pays(model: str) -> bool:
    """Whether bf16 autocast pays off on CPU for the family `model` (its `cpu_bf16_pays`).

    The neuro model trains under bf16 too (its rho state stays fp32), but its matrices are
    too small to gain: 150 steps of `neuro tiny` took 17.8 s against 16.3 s in fp32, at the
    same validation loss.
    """
    from bdh.registry import model_class

    return model_class(model).cpu_bf16_pays


def resolve_precision(precision: str, device: torch.device, model: str = "bdh") -> str:
    """auto: bf16 autocast on CUDA cards and CPUs with native bf16, fp32 elsewhere.

    On CPU, bf16 autocast reached the same validation loss as fp32 in about half the time
    (docs/training.md).
    """
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("fp16 training needs CUDA (use bf16 or fp32 on CPU)")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and cpu_bf16_pays(model) and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision: none for fp32, else bf16 or fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)
