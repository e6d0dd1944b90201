"""`bdh train` on CPU reuses freed buffers (bdh.buffers), and its results stay bitwise the same."""

from __future__ import annotations

import contextlib
import json

import torch
from safetensors.torch import load_file

from bdh import buffers
from bdh.train import loop, train
from tests.conftest import require_cpp_kernel


def _records(run) -> list[dict]:
    keep = ("step", "loss", "grad_norm", "val_loss", "val_bpb", "state_norm")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines)]


def test_training_with_buffer_reuse_matches_training_without(make_cfg, monkeypatch):
    require_cpp_kernel(buffers._kernel() is not None, "buffer cache")
    hits = buffers.buffer_stats().hits
    reused = train(make_cfg("reused"))
    assert buffers.buffer_stats().hits - hits > 100
    assert buffers.cached_bytes() == 0  # freed when the loop ends
    monkeypatch.setattr(loop, "_buffer_reuse", lambda device: contextlib.nullcontext(False))
    hits = buffers.buffer_stats().hits
    plain = train(make_cfg("plain"))
    assert buffers.buffer_stats().hits == hits
    assert _records(reused) == _records(plain)  # losses, gradient norms, validation loss
    a, b = load_file(str(reused / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
