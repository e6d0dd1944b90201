"""What every experiment report shares: its output directory and the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from bdh.checkpoint import atomic_write
from bdh.errors import ConfigError


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """The CPU, torch and its threads, and the load when the experiment started."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()),
    }


class ReportDir:
    """An experiment's output directory: refused when it exists and holds files, unless
    `force` (then emptied first); files are written atomically."""

    def __init__(self, path: str | os.PathLike[str], force: bool = False):
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"output path '{self.root}' exists and is not a directory")
        if self.root.is_dir() and any(self.root.iterdir()):
            if not force:
                raise ConfigError(
                    f"output directory '{self.root}' already exists; use --force to replace it"
                )
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def write_text(self, name: str, text: str) -> Path:
        atomic_write(self.path(name), lambda tmp: tmp.write_text(text))
        return self.path(name)

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2) + "\n")
