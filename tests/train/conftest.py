"""A model small enough that a training step takes milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdh.train import TrainConfig

TINY_MODEL = {"n_layer": 1, "n_embd": 32, "n_head": 2, "mlp_internal_dim_multiplier": 4, "dropout": 0.1}
# The same model as command-line flags.
TINY_FLAGS = [
    "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2",
    "--set", "mlp_internal_dim_multiplier=4", "--set", "dropout=0.1",
    "--block-size", "16", "--batch-size", "4", "--eval-tokens", "64", "--no-progress",
]  # fmt: skip


@pytest.fixture
def make_cfg(tmp_path: Path):
    def make(name: str = "run", **changes) -> TrainConfig:
        base = dict(
            preset="tiny", model_overrides=dict(TINY_MODEL), steps=6, batch_size=4, block_size=16,
            lr=1e-2, min_lr=1e-3, warmup_steps=2, eval_every=3, eval_tokens=64, log_every=1,
            checkpoint_every=2, keep_last=2, progress=False, out_dir=str(tmp_path / name),
            device="cpu", precision="fp32",
        )  # fmt: skip
        base.update(changes)
        return TrainConfig(**base)

    return make
