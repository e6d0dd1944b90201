"""Training metrics: activity sparsity through the model's probe hooks, recurrent state
norm, and the metrics.jsonl (+ optional TensorBoard) writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bdh.errors import ConfigError, DataError
from bdh.registry import family, state_tensors


class ActivityProbe:
    """Fraction of exactly-zero entries in x_sparse and y_sparse, averaged over layers.

    Hooks the probe points "x" / "y" when the model's family declares them; they only
    measure while `active`, so ordinary steps pay nothing but a flag test.
    """

    def __init__(self, model: nn.Module):
        self.active = False
        self._values: dict[str, list[Tensor]] = {"x": [], "y": []}
        self._handles = []
        points = family(model).probe_points
        for key in self._values:
            if key in points:
                self._handles += points[key].hook(model, self._hook(key))

    def _hook(self, key: str):
        def hook(module: nn.Module, output: Tensor) -> None:
            if self.active:
                self._values[key].append((output.detach() == 0).float().mean())

        return hook

    def collect(self) -> dict[str, float]:
        """Mean sparsity since the last collect ({"sparsity_x", "sparsity_y"}), then reset."""
        out = {f"sparsity_{k}": torch.stack(v).mean().item() for k, v in self._values.items() if v}
        self._values = {"x": [], "y": []}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@torch.no_grad()
def state_norm(model: nn.Module, idx: Tensor) -> float | None:
    """Frobenius norm of the recurrent state (BDH: rho of every layer) after reading idx [1, T].

    None for models without the recurrent `init_state`/`prefill` interface.
    """
    if not (hasattr(model, "init_state") and hasattr(model, "prefill")):
        return None
    was_training = model.training
    model.eval()
    try:
        _, state = model.prefill(idx, model.init_state(idx.shape[0]), all_logits=False)
    finally:
        model.train(was_training)
    tensors = state_tensors(state)
    if not tensors:
        return None
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors)).item())


class MetricsWriter:
    """Appends one JSON object per line to RUN_DIR/metrics.jsonl; mirrors to TensorBoard."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._file.close()
                raise ConfigError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None
            self._tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order.

    A final line that does not parse is skipped (cut off by a crash, or still being
    written); any other line that is not a JSON object raises DataError naming it.
    """
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a text file of JSON lines") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise DataError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number} is not a JSON object")
        records.append(record)
    return records
