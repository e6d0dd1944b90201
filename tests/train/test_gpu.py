"""CUDA paths (bf16 autocast, fp16 + GradScaler, TF32); skipped without a GPU."""

from __future__ import annotations

import json

import pytest
import torch

from bdh.train import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cuda_precisions_train(make_cfg, precision):
    run = train(make_cfg(f"cuda_{precision}", device="cuda", precision=precision, steps=4))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert torch.backends.cuda.matmul.allow_tf32
