"""Tiny BDH and GPT checkpoints for the app tests (random weights: the tests check that
the app shows what the analysis library computes, not what training achieves)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bdh.checkpoint import save_checkpoint
from bdh.config import preset
from bdh.model import BDH
from bdh.tokenizers import ByteTokenizer


@pytest.fixture(scope="session")
def app_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from bdh.baselines.gpt import GPT, GPTConfig

    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    bdh = BDH(preset("tiny", n_layer=2, n_embd=32, mlp_internal_dim_multiplier=8)).eval()
    gpt = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=2, block_size=128)).eval()
    return (
        save_checkpoint(root / "bdh", bdh, ByteTokenizer()),
        save_checkpoint(root / "gpt", gpt, ByteTokenizer()),
    )


@pytest.fixture
def app_env(app_pair, monkeypatch, tmp_path):
    monkeypatch.setenv("BDH_APP_BDH", str(app_pair[0]))
    monkeypatch.setenv("BDH_APP_BASELINE", str(app_pair[1]))
    monkeypatch.setenv("BDH_CACHE_DIR", str(tmp_path / "cache"))
    return app_pair
