"""Shared fixtures. Reference implementations live in ../shared/reference beside the repo
(or in $BDH_REFERENCE_DIR); tests that compare against them skip when that folder is absent."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("BDH_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def load_reference(name: str) -> ModuleType:
    """Import ../shared/reference/<name>.py, or skip the test when it is not there."""
    path = REFERENCE_DIR / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"reference implementation {path} not available")
    module_name = f"_reference_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def require_cpp_kernel(built: bool, what: str) -> None:
    """Skip a test of a C++ kernel that could not be built here; under CI, fail instead."""
    if not built:
        if os.environ.get("CI"):
            pytest.fail(f"the C++ {what} kernel did not build")
        pytest.skip(f"no C++ toolchain to build the {what} kernel")


@pytest.fixture
def single_thread():
    """One torch thread for the test, restored afterwards (small ops, 2-core CI machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
