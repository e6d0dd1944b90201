"""Training engine in process: exact resume, signals, NaN, damaged checkpoints, learning rules."""

from __future__ import annotations

import json
import math
import signal
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bdh.checkpoint import load_checkpoint
from bdh.errors import CheckpointError, ConfigError
from bdh.train import TrainingDiverged, TrainingInterrupted, resume_config, train
from bdh.train.optim import param_groups
from bdh.train.state import list_checkpoints


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def interrupt_at(step: int):
    """on_metrics callback that delivers a real SIGINT after `step` (the handler only sets a flag)."""

    def callback(record: dict) -> None:
        if record["step"] == step and "loss" in record:
            signal.raise_signal(signal.SIGINT)

    return callback


def test_resume_is_exact(make_cfg):
    """(a) 6 steps straight == 3 steps, interrupted, resumed for 3 (dropout on, cosine LR)."""
    straight = train(make_cfg("straight"))
    cfg = make_cfg("resumed")
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 3"):
        train(cfg, on_metrics=interrupt_at(3))
    assert [p.name for p in list_checkpoints(Path(cfg.out_dir))] == ["step_00000002", "step_00000003"]
    resumed = train(resume_config(cfg.out_dir), resume=True)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    opt_a = load_file(str(straight / "checkpoints/step_00000006/optimizer.safetensors"))
    opt_b = load_file(str(resumed / "checkpoints/step_00000006/optimizer.safetensors"))
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    # Metrics of the resumed run continue where the checkpoint was, without duplicates.
    steps = [r["step"] for r in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_metrics_and_run_dir_contents(make_cfg):
    run = train(make_cfg(eval_every=3))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    eval_lines = [r for r in records if "val_loss" in r]
    assert len(train_lines) == 6 and [r["step"] for r in eval_lines] == [3, 6]
    for key in ("lr", "tokens_per_s", "elapsed_s", "grad_norm", "sparsity_x", "sparsity_y"):
        assert all(key in r for r in train_lines), key
    assert all(0.0 <= r["sparsity_x"] <= 1.0 for r in train_lines)
    assert all(r["state_norm"] > 0 and math.isfinite(r["val_bpb"]) for r in eval_lines)
    assert train_lines[0]["lr"] < train_lines[1]["lr"]  # warmup
    assert train_lines[-1]["lr"] == pytest.approx(1e-3)  # cosine ends at min_lr
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]
    # Last K checkpoints kept; the run dir itself loads as a checkpoint.
    assert [p.name for p in list_checkpoints(run)] == ["step_00000004", "step_00000006"]
    model, tokenizer = load_checkpoint(run)
    assert model.config.n_embd == 32 and tokenizer.vocab_size == 256
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["steps"] == 6 and saved["model_overrides"]["n_embd"] == 32


def test_existing_run_dir_needs_resume_or_force(make_cfg):
    """(f)"""
    cfg = make_cfg(steps=2)
    train(cfg)
    before = weights(Path(cfg.out_dir))
    with pytest.raises(ConfigError, match="already exists; use --resume"):
        train(cfg.replace(seed=5))
    assert all(torch.equal(before[k], v) for k, v in weights(Path(cfg.out_dir)).items())
    train(cfg.replace(seed=5), force=True)
    assert not all(torch.equal(before[k], v) for k, v in weights(Path(cfg.out_dir)).items())


def test_force_refuses_foreign_files(make_cfg):
    cfg = make_cfg(steps=1)
    Path(cfg.out_dir).mkdir()
    (Path(cfg.out_dir) / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not from a run"):
        train(cfg, force=True)


def test_truncated_or_foreign_checkpoint_is_refused(make_cfg):
    """(e) in process: a truncated file and a run from another config."""
    cfg = make_cfg(steps=2, checkpoint_every=1)
    run = train(cfg)
    with pytest.raises(ConfigError, match="was trained with preset='tiny'"):
        resume_config(run, {"preset": "small"})
    with pytest.raises(ConfigError, match="batch_size"):
        resume_config(run, {"batch_size": 8})
    weights_file = run / "checkpoints/step_00000002/model.safetensors"
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(resume_config(run, {"steps": 4}), resume=True)


def test_checkpoint_that_does_not_fit_the_model_is_refused(make_cfg):
    cfg = make_cfg(steps=1, checkpoint_every=1)
    run = train(cfg)
    saved = json.loads((run / "train_config.json").read_text())
    saved["model_overrides"]["n_embd"] = 64  # as if the run dir held another model's weights
    (run / "train_config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        train(resume_config(run, {"steps": 2}), resume=True)


class PoisonRule:
    """Fake learning rule: from `poison_from` on, the y activity of the forward pass is NaN."""

    uses_backprop = True

    def __init__(self, poison_from: int):
        self.poison_from = poison_from
        self.steps_done = 0

    def attach(self, model):
        def hook(module, inputs, output):
            return output * math.nan if self.steps_done >= self.poison_from else output

        model.probe_y.register_forward_hook(hook)

    def after_step(self, model, step, report=True, rate_scale=1.0):
        self.steps_done = step
        return {}

    def state_dict(self):
        return {"steps_done": torch.tensor(self.steps_done)}

    def load_state_dict(self, state):
        self.steps_done = int(state["steps_done"])


class CountingHebbianRule:
    """Fake local rule without backprop: nudges the decoder and keeps a mask as state."""

    uses_backprop = False

    def __init__(self):
        self.mask = None

    def attach(self, model):
        self.mask = torch.ones_like(model.decoder, dtype=torch.bool)

    @torch.no_grad()
    def after_step(self, model, step, report=True, rate_scale=1.0):
        model.decoder.add_(1e-3)
        self.mask.view(-1)[step] = False
        return {"pruned": float((~self.mask).sum())}

    def state_dict(self):
        return {"mask": self.mask}

    def load_state_dict(self, state):
        self.mask = state["mask"].clone()


def install_rule(monkeypatch, rule, calls: list):
    module = types.ModuleType("bdh.learning")

    def make_learning_rule(mode, hebbian_lr, prune_every, prune_threshold, homeostatic_scaling, **rates):
        calls.append((mode, hebbian_lr, prune_every, prune_threshold, homeostatic_scaling))
        return rule

    module.make_learning_rule = make_learning_rule
    monkeypatch.setitem(sys.modules, "bdh.learning", module)


def test_nan_stops_and_keeps_last_good_checkpoint(make_cfg, monkeypatch):
    """(d) the loss turns NaN in step 3: a clear error, step 2's checkpoint intact and finite."""
    install_rule(monkeypatch, PoisonRule(poison_from=2), calls := [])
    cfg = make_cfg(steps=6, checkpoint_every=1, learning_mode="hybrid")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3.*step_00000002"):
        train(cfg)
    assert calls == [("hybrid", 1e-3, 0, 0.0, False)]
    run = Path(cfg.out_dir)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    model, _ = load_checkpoint(run / "checkpoints/step_00000002")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((run / "config.json").read_text())["train_step"] == 2


def test_local_rule_without_backprop_and_its_state_resumes(make_cfg, monkeypatch):
    rule = CountingHebbianRule()
    install_rule(monkeypatch, rule, [])
    cfg = make_cfg(steps=3, checkpoint_every=1, learning_mode="hebbian", eval_every=10)
    torch.manual_seed(cfg.seed)
    run = train(cfg)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["pruned"] for r in records if "loss" in r] == [1.0, 2.0, 3.0]
    assert all("grad_norm" not in r for r in records)
    final = weights(run)
    fresh = load_checkpoint(run)[0]
    # Only the rule changed weights: everything but the decoder is still at initialisation.
    from bdh.registry import build_model_from_preset

    torch.manual_seed(cfg.seed)
    init = build_model_from_preset("bdh", "tiny", **cfg.model_overrides).state_dict()
    assert torch.equal(final["encoder"], init["encoder"])
    assert torch.allclose(final["decoder"], init["decoder"] + 3e-3)
    assert fresh is not None
    # The rule's state is saved with the checkpoint and handed back on resume.
    second = CountingHebbianRule()
    install_rule(monkeypatch, second, [])
    train(resume_config(run, {"steps": 4}), resume=True)
    assert int((~second.mask).sum()) == 4


def test_no_weight_decay_on_embeddings():
    from bdh.registry import build_model_from_preset

    model = build_model_from_preset("bdh", "tiny")
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert any(p is model.embed.weight for p in no_decay["params"])
    assert all(p is not model.embed.weight for p in decay["params"])
    assert any(p is model.encoder for p in decay["params"])


@pytest.mark.parametrize("family", ["gpt", "neuro"])
def test_other_model_families_train_through_the_registry(make_cfg, family):
    from bdh.registry import model_class

    try:
        model_class(family)
    except ImportError:
        pytest.skip(f"model family {family} not available")
    run = train(make_cfg(family, model=family, preset="tiny", model_overrides={}, steps=2, eval_every=2))
    model, _ = load_checkpoint(run)
    assert model.model_type == family
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r and math.isfinite(r["val_loss"]) for r in records)


def test_force_with_a_bad_option_keeps_the_old_run(make_cfg):
    cfg = make_cfg(steps=1)
    train(cfg)
    with pytest.raises(ConfigError, match="unknown bdh preset"):
        train(cfg.replace(preset="nope"), force=True)
    assert (Path(cfg.out_dir) / "checkpoints/step_00000001").is_dir()


def test_tf32_is_switched_on_for_a_cuda_run_only_and_restored() -> None:
    from bdh.train.loop import _tf32_matmuls

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = tuple(f.allow_tf32 for f in flags)
    for f in flags:
        f.allow_tf32 = False
    try:
        with _tf32_matmuls(torch.device("cpu")):
            assert not any(f.allow_tf32 for f in flags)
        with _tf32_matmuls(torch.device("cuda")):
            assert all(f.allow_tf32 for f in flags)
        assert not any(f.allow_tf32 for f in flags)
    finally:
        for f, value in zip(flags, before):
            f.allow_tf32 = value


def test_read_metrics_skips_a_cut_off_last_line_and_names_a_corrupt_one(tmp_path) -> None:
    from bdh.errors import DataError
    from bdh.train.metrics import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.5}]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl line 2 is not valid JSON"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"line 2 is not a JSON object"):
        read_metrics(path)
