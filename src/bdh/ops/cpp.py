"""Building the package's C++ CPU kernels with torch's extension tools, once per machine.

A kernel is compiled on first use (a C++ compiler and ninja, which `torch.compile` on CPU
needs too) into torch's extension cache and loaded from there afterwards. Where it cannot
be built, `load_kernel` says so once and returns None, and callers use the kernel's plain
PyTorch twin. Set BDH_NO_CPP_KERNELS=1 to use the twins without building anything.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

DISABLE_ENV = "BDH_NO_CPP_KERNELS"
# -fopenmp: at::parallel_for is serial without it. No -march=native: torch's extension
# cache may be shared by machines with different CPUs (the kernels pick their vector width
# at run time where it matters, through target_clones).
CFLAGS = ["-O3", "-fopenmp"]

_loaded: dict[str, ModuleType | None] = {}


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's binary is not there when its
    environment is used without being activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _is_cached(name: str) -> bool:
    """Whether an earlier process built the kernel (torch's extension cache, best effort)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return any(Path(_get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        return False


def _build(name: str, source: Path) -> ModuleType | None:
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return None
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        if not _is_cached(name):
            print(f"bdh: building {name} (once per machine, about 30 s)", file=sys.stderr)
        return load(name, [str(source)], extra_cflags=CFLAGS, verbose=False)
    except Exception as error:  # no compiler or ninja: fall back, say so once
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        warnings.warn(f"bdh: C++ kernel {name} unavailable, using its PyTorch twin ({reason})", stacklevel=3)
        return None


def load_kernel(name: str, source: Path) -> ModuleType | None:
    """The compiled module of `source` (built on the first call in a process), or None.

    Call it outside compiled code first: traced code should only read the result.
    """
    if name not in _loaded:
        _loaded[name] = _build(name, source)
    return _loaded[name]
