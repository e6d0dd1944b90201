"""Building the package's C++ CPU kernels with torch's extension tools, once per machine.

A kernel is compiled on first use (a C++ compiler and ninja, which `torch.compile` on CPU
needs too) into torch's extension cache and loaded from there afterwards. Where it cannot
be built, `load_kernel` says so once and returns None, and callers use the kernel's plain
PyTorch twin. Set BDH_NO_CPP_KERNELS=1 to use the twins without building anything.

The cache entry is named by `cache_key`: a hash of the source bytes, the compiler flags,
torch's version and the Python ABI, and of nothing that depends on where the package or
torch is installed. Two checkouts or virtual environments with the same sources and torch
share one build; a built entry is imported directly, without running ninja, whose command
lines (absolute source and include paths) differ between installs and would rebuild.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
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


def cache_key(source: Path, cflags: list[str] = CFLAGS) -> str:
    """16 hex digits naming a build: the source bytes, the flags, torch and Python."""
    import torch

    digest = hashlib.sha256()
    for part in (
        source.read_bytes(),
        " ".join(cflags).encode(),
        torch.__version__.encode(),
        str(torch.version.git_version).encode(),
        sys.implementation.cache_tag.encode(),
        platform.machine().encode(),
    ):
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's binary is not there when its
    environment is used without being activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def build_directory(name: str) -> Path:
    """Where torch's `load` builds `name` (its `_get_build_directory`, without importing
    torch.utils.cpp_extension, which takes a quarter of a second: loading a built kernel
    should cost far less than that)."""
    import torch
    import torch._appdirs  # not imported by `import torch`; cpp_extension imports it

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        if torch.version.hip is not None:
            accelerator = f"rocm{torch.version.hip.replace('.', '')}"
        elif torch.version.cuda is not None:
            accelerator = f"cu{torch.version.cuda.replace('.', '')}"
        else:
            accelerator = "cpu"
        python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        cache = os.path.realpath(torch._appdirs.user_cache_dir(appname="torch_extensions"))
        root = os.path.join(cache, f"{python}_{accelerator}")
    return Path(root) / name


def _built_library(name: str) -> Path | None:
    """The finished shared library of an earlier build of `name`, or None (not built, or
    another process is building it: torch's lock file is still there)."""
    directory = build_directory(name)
    library = directory / f"{name}.so"
    if library.is_file() and not (directory / "lock").exists():
        return library
    return None


def _import(name: str, library: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, source: Path, cflags: list[str]) -> ModuleType | None:
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return None
    try:
        import torch  # noqa: F401  (the library links against torch's, loaded first)

        keyed = f"{name}_{cache_key(source, cflags)}"
        library = _built_library(keyed)
        if library is not None:
            return _import(keyed, library)
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()
        print(f"bdh: building {name} (once per machine, about 30 s)", file=sys.stderr)
        return load(keyed, [str(source)], extra_cflags=cflags, verbose=False)
    except Exception as error:  # no compiler or ninja: fall back, say so once
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        warnings.warn(
            f"bdh: C++ kernel {name} unavailable, using its PyTorch twin ({reason})", stacklevel=3
        )
        return None


def load_kernel(name: str, source: Path, extra_cflags: tuple[str, ...] = ()) -> ModuleType | None:
    """The compiled module of `source` (built on the first call in a process), or None.

    `extra_cflags` are added to CFLAGS for this kernel (and name its build too).

    Call it outside compiled code first: traced code should only read the result.
    """
    if name not in _loaded:
        _loaded[name] = _build(name, source, [*CFLAGS, *extra_cflags])
    return _loaded[name]
