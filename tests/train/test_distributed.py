"""(b) DDP: 2 gloo ranks on CPU == 1 process with the same global batch; resume on 1 rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from bdh.train import resume_config, train
from tests.train.conftest import TINY_FLAGS

# Summation order differs between ranks' all-reduce and one process; fp32 rounding only.
TOLERANCE = 1e-5


def torchrun(args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "bdh", "train", *args, "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_two_gloo_ranks_match_one_process(make_cfg, tmp_path):
    # No dropout: each rank has its own dropout generator, so masks cannot match one process.
    common = ["--set", "dropout=0.0", "--schedule", "constant", "--lr", "1e-2", "--warmup-steps", "2",
              "--device", "cpu", "--precision", "fp32", "--eval-every", "100", "--checkpoint-every", "2", "--log-every", "1"]  # fmt: skip
    # One process, global batch 4 as two micro-batches of 2 (gradient accumulation).
    single = make_cfg("single", steps=4, micro_batch_size=2, schedule="constant",
                      model_overrides={**make_cfg().model_overrides, "dropout": 0.0})  # fmt: skip
    train(single)
    torchrun([*TINY_FLAGS, *common, "--steps", "4"], tmp_path / "ddp")
    start = load_file(str(tmp_path / "ddp/checkpoints/step_00000002/model.safetensors"))
    end = load_file(str(tmp_path / "ddp/model.safetensors"))
    assert max((start[k] - end[k]).abs().max().item() for k in start) > 1e-3  # it did train
    assert max_diff(Path(single.out_dir), tmp_path / "ddp") < TOLERANCE
    # 2 ranks for 2 steps, then resumed on 1 process to step 4: same parameters again.
    torchrun([*TINY_FLAGS, *common, "--steps", "2"], tmp_path / "mixed")
    train(resume_config(tmp_path / "mixed", {"steps": 4}), resume=True)
    assert max_diff(Path(single.out_dir), tmp_path / "mixed") < TOLERANCE
    metrics = (tmp_path / "ddp/metrics.jsonl").read_text().splitlines()
    assert len([line for line in metrics if '"loss"' in line]) == 4  # rank 0 logs alone
    assert torch.isfinite(end["encoder"]).all()
