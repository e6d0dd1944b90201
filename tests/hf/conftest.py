"""Tiny BDH models for the transformers integration (skipped without transformers)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach the Hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import torch  # noqa: E402

import bdh  # noqa: E402
from bdh.config import BDHConfig  # noqa: E402

TINY = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)


@pytest.fixture
def pair():
    """(BDH, BDHForCausalLM) sharing one set of weights, in eval mode."""
    from bdh.hf import BDHForCausalLM

    torch.manual_seed(0)
    model = bdh.BDH(BDHConfig(**TINY)).eval()
    return model, BDHForCausalLM.from_bdh(model).eval()
