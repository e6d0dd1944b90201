"""The C++ extension cache is keyed by what the build depends on, not by install paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bdh.ops import cpp
from bdh.ops.decode import cpu as decode_cpu
from tests.conftest import require_cpp_kernel

SOURCE = Path(decode_cpu.__file__).with_name("decode_cpu.cpp")


def _checkout(root: Path) -> Path:
    """A copy of the kernel source where another checkout would keep it."""
    target = root / "src" / "bdh" / "ops" / "decode" / SOURCE.name
    target.parent.mkdir(parents=True)
    shutil.copyfile(SOURCE, target)
    return target


def test_same_sources_in_two_checkouts_share_a_key(tmp_path) -> None:
    one, two = _checkout(tmp_path / "a"), _checkout(tmp_path / "venv" / "b")
    assert cpp.cache_key(one) == cpp.cache_key(two) == cpp.cache_key(SOURCE)


def test_one_changed_source_byte_changes_the_key(tmp_path) -> None:
    original = _checkout(tmp_path / "a")
    edited = _checkout(tmp_path / "b")
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 1
    edited.write_bytes(bytes(data))
    assert cpp.cache_key(edited) != cpp.cache_key(original)


def test_flags_and_torch_version_change_the_key(tmp_path, monkeypatch) -> None:
    source = _checkout(tmp_path / "a")
    key = cpp.cache_key(source)
    assert cpp.cache_key(source, [*cpp.CFLAGS, "-DX"]) != key
    monkeypatch.setattr(torch, "__version__", torch.__version__ + "+other")
    assert cpp.cache_key(source) != key


def test_a_second_checkout_imports_the_first_build(tmp_path, monkeypatch) -> None:
    """Built once (by this package's own source), a copy elsewhere loads without a build."""
    require_cpp_kernel(decode_cpu._kernel() is not None, "decoding")

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although the same sources were built before")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_build)
    module = cpp._build(decode_cpu.NAME, _checkout(tmp_path / "other"), cpp.CFLAGS)
    assert module is not None and hasattr(module, "decode_token")


@pytest.mark.parametrize("extensions_dir", [True, False])
def test_build_directory_is_torchs(monkeypatch, tmp_path, extensions_dir) -> None:
    from torch.utils.cpp_extension import _get_build_directory

    if extensions_dir:
        monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cpp.build_directory("bdh_x") == Path(_get_build_directory("bdh_x", verbose=False))


def test_build_directory_in_a_fresh_process_without_extensions_dir(tmp_path) -> None:
    # `import torch` alone does not import torch._appdirs: the lookup must not rely on an
    # earlier import of torch.utils.cpp_extension (as the test above does)
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TORCH_EXTENSIONS_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = (
        "import sys; from bdh.ops import cpp; print(cpp.build_directory('bdh_x')); "
        "print('torch.utils.cpp_extension' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[0]).parent.parent == tmp_path.resolve() / "torch_extensions"
    assert out[1] == "False"


def test_every_kernel_source_ships_in_the_package() -> None:
    """A wheel carries each C++ source, which is built on the user's machine."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bdh"]
    package = root / "src" / "bdh"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    sources = set(package.rglob("*.cpp"))
    assert sources and sources <= shipped
