"""Learning modes through the training engine: masks survive checkpoint and resume."""

from __future__ import annotations

import json

import pytest

from bdh.learning import prunable_parameters

pytestmark = pytest.mark.usefixtures("single_thread")


def config(tmp_path, **changes):
    train_mod = pytest.importorskip("bdh.train")
    base = dict(
        model="neuro", preset="tiny", model_overrides={"n": 32, "d": 8}, steps=4, batch_size=4,
        block_size=16, lr=1e-2, warmup_steps=0, eval_every=100, eval_tokens=256, log_every=1,
        checkpoint_every=2, progress=False, device="cpu", out_dir=str(tmp_path / "run"),
        learning_mode="hybrid", hebbian_lr=0.01, prune_every=2, prune_threshold=0.05,
    )  # fmt: skip
    return train_mod, train_mod.TrainConfig(**{**base, **changes})


def test_hebbian_mode_trains_and_reports_sparsity(tmp_path):
    train_mod, cfg = config(tmp_path, learning_mode="hebbian", steps=2)
    run = train_mod.train(cfg)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "loss" in r]
    assert train_lines and "grad_norm" not in train_lines[-1]
    assert {"weight_sparsity", "act_sparsity", "hebbian_update"} <= set(train_lines[-1])


def test_pruned_weights_stay_zero_after_resume(tmp_path):
    from bdh.checkpoint import load_checkpoint

    train_mod, cfg = config(tmp_path)
    run = train_mod.train(cfg)
    pruned = {k: (p == 0) for k, p in prunable_parameters(load_checkpoint(run)[0]).items()}
    assert any(m.any() for m in pruned.values())
    # Step 5 prunes nothing new (prune_every=2); only the restored mask keeps the zeros.
    train_mod.train(cfg.replace(steps=5), resume=True)
    after = prunable_parameters(load_checkpoint(run)[0])
    for name, mask in pruned.items():
        assert (after[name][mask] == 0).all(), f"{name}: pruned synapses regrew after resume"
