"""The decoding ablation in benchmarks/decode_bandwidth.py times what BDH.step computes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from bdh.config import preset
from bdh.model import BDH, BDHState

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decode_bandwidth.py"


def test_ablation_step_without_skipping_equals_bdh_step() -> None:
    spec = importlib.util.spec_from_file_location("decode_bandwidth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = BDH(preset("tiny")).eval()
    _, prefilled = model.prefill(torch.randint(0, 256, (1, 8)), all_logits=False)
    ours = BDHState(prefilled.kv.clone(), prefilled.position)
    copy = module.step_without(model, "")
    for token in torch.randint(0, 256, (5, 1)):
        expected, prefilled = model.step(token, prefilled)
        torch.testing.assert_close(copy(token, ours), expected, rtol=1e-5, atol=1e-6)
    assert ours.position == prefilled.position
