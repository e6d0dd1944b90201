"""The C++ k-WTA kernel (kwta_cpu.cpp), built on first use and registered as `bdh::kwta_mask`.

It is compiled with torch's C++ extension tools (a C++ compiler and ninja, which
`torch.compile` on CPU needs too) into torch's extension cache, once per machine. Where it
cannot be built, `kernel_available()` is False and callers use the `torch.topk` twin.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

DISABLE_ENV = "BDH_NO_CPP_KERNELS"  # set it to use torch.topk without building the kernel
NAME = "bdh_kwta_cpu"
_built: dict[str, ModuleType | None] = {}


def _is_cached() -> bool:
    """Whether an earlier process built the kernel (torch's extension cache, best effort)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(NAME, verbose=False)).glob(f"{NAME}*.so"))
    except Exception:
        return False


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's binary is not there when its
    environment is used without being activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build() -> ModuleType | None:
    if os.environ.get(DISABLE_ENV):
        return None
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        if not _is_cached():
            print(f"bdh: building {NAME} (once per machine, about 30 s)", file=sys.stderr)
        source = Path(__file__).with_name("kwta_cpu.cpp")
        # -fopenmp: at::parallel_for is serial without it. No -march=native: torch's
        # extension cache may be shared by machines with different CPUs, and the key loop
        # vectorizes as well without it.
        flags = ["-O3", "-fopenmp"]
        return load(NAME, [str(source)], extra_cflags=flags, verbose=False)
    except Exception as error:  # no compiler or ninja: fall back, say so once
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        warnings.warn(f"bdh: C++ k-WTA kernel unavailable, using torch.topk ({reason})", stacklevel=3)
        return None


def kernel_available() -> bool:
    """Whether the kernel is built (building it on the first call, outside compiled code:
    `BDHNeuro.compile` calls this before compiling, so traced code only reads the result)."""
    if "kernel" not in _built:
        _built["kernel"] = _build()
    return _built["kernel"] is not None


@torch.library.custom_op("bdh::kwta_mask", mutates_args=())
def kwta_mask_cpu(z: Tensor, ks: Tensor, k: int, k_max: int) -> Tensor:
    """`kwta_mask_naive(z, k or ks, k_max)` for z [R, n] on CPU (ks: one count per row, or
    empty to use k for every row; k_max: a bound on ks, or 0)."""
    return _built["kernel"].kwta_mask(z, ks, k, k_max)


@kwta_mask_cpu.register_fake
def _(z: Tensor, ks: Tensor, k: int, k_max: int) -> Tensor:
    return torch.empty_like(z, dtype=torch.bool)
