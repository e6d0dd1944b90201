"""Fixtures: tiny BDH / GPT checkpoints and one torch thread (tiny ops are slowed down
by thread hand-offs on a busy 2-core machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bdh.checkpoint import save_checkpoint
from bdh.config import preset
from bdh.model import BDH
from bdh.tokenizers import ByteTokenizer


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs on one torch thread."""


def tiny_bdh(seed: int = 0) -> BDH:
    torch.manual_seed(seed)
    return BDH(preset("tiny", n_layer=2, n_embd=32, mlp_internal_dim_multiplier=8)).eval()


@pytest.fixture(scope="session")
def bdh_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("bdh") / "ckpt", tiny_bdh(), ByteTokenizer())


@pytest.fixture(scope="session")
def gpt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bdh.baselines.gpt import GPT, GPTConfig

    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_embd=32, n_head=2, block_size=64, vocab_size=256)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("gpt") / "ckpt", model, ByteTokenizer())
