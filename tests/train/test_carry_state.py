"""Carried-state training (truncated BPTT across steps): the engine against a hand-written
loop, exact resume, DDP against one process, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bdh.data import load_corpus
from bdh.data.streams import StreamSchedule
from bdh.errors import ConfigError
from bdh.registry import build_model_from_preset
from bdh.train import TrainingInterrupted, resume_config, train
from bdh.train.optim import build_optimizer
from bdh.train.schedule import lr_at
from tests.train.conftest import TINY_FLAGS, TINY_MODEL
from tests.train.test_distributed import TOLERANCE, max_diff, torchrun
from tests.train.test_engine import interrupt_at, weights

NO_DROPOUT = {**TINY_MODEL, "dropout": 0.0}


def carried(make_cfg, name: str = "run", **changes):
    base = dict(carry_state=True, reset_tokens=48, steps=7, model_overrides=dict(NO_DROPOUT))
    return make_cfg(name, **{**base, **changes})


def test_carried_training_equals_a_hand_written_loop(make_cfg):
    cfg = carried(make_cfg, micro_batch_size=2)
    run = train(cfg)

    corpus, tokenizer = load_corpus(None, "byte", cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    model = build_model_from_preset("bdh", "tiny", **NO_DROPOUT, vocab_size=tokenizer.vocab_size)
    model.train()
    optimizer = build_optimizer(
        model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), torch.device("cpu")
    )
    schedule = StreamSchedule(
        len(corpus.train), cfg.batch_size, cfg.block_size, cfg.seed, cfg.reset_tokens
    )
    assert schedule.steps_per_stream == 3  # streams restart at steps 0, 3 and 6
    states = [None, None]
    for step in range(cfg.steps):
        starts = schedule.starts(step)
        for i in range(2):  # two micro-batches of two rows
            if step % 3 == 0:
                states[i] = model.init_state(2)
            x, y = corpus.windows(corpus.train, starts[2 * i : 2 * i + 2], cfg.block_size)
            _, loss, state = model(x, y, state=states[i])
            (loss / 2).backward()
            states[i] = state.detach()
            assert state.position == (step % 3 + 1) * cfg.block_size
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.schedule)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    saved = weights(run)
    for name, tensor in model.state_dict().items():
        assert torch.allclose(saved[name], tensor, rtol=0, atol=1e-6), name
    # The checkpoint holds the carried state of all rows: step 7 is one step into a stream.
    state = load_file(str(run / "checkpoints/step_00000007/carried_state.safetensors"))
    assert state["position"].tolist() == [cfg.block_size]
    both = torch.cat([states[0].kv, states[1].kv], dim=1)
    assert torch.allclose(state["kv"], both, rtol=0, atol=1e-6)


def test_carried_state_changes_what_is_learned(make_cfg):
    """The same streams with the state zeroed at every step train other weights."""
    with_state = weights(train(carried(make_cfg, "a", steps=3, reset_tokens=48)))
    without = weights(train(carried(make_cfg, "b", steps=3, reset_tokens=16)))
    assert not torch.equal(with_state["encoder"], without["encoder"])


def test_resume_with_carried_state_is_bitwise(make_cfg):
    straight = train(carried(make_cfg, "straight"))
    cfg = carried(make_cfg, "resumed")
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_metrics=interrupt_at(4))  # mid-stream: the carried state matters
    resumed = train(resume_config(cfg.out_dir), resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_ranks_with_carried_state_match_one_process(make_cfg, tmp_path):
    # A constant schedule: the 2-rank run is planned for 4 steps, then continued to 5.
    common = ["--set", "dropout=0.0", "--schedule", "constant", "--lr", "1e-2", "--warmup-steps", "2",
              "--device", "cpu", "--precision", "fp32", "--eval-every", "100",
              "--checkpoint-every", "2", "--carry-state", "--reset-tokens", "48"]  # fmt: skip
    single = carried(make_cfg, "single", steps=5, micro_batch_size=2, schedule="constant")
    train(single)
    # 2 ranks for 4 steps (mid-stream at the end), resumed on one process to step 5.
    torchrun([*TINY_FLAGS, *common, "--steps", "4"], tmp_path / "ddp")
    train(resume_config(tmp_path / "ddp", {"steps": 5}), resume=True)
    assert max_diff(Path(single.out_dir), tmp_path / "ddp") < TOLERANCE


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(reset_tokens=40), "multiple of the block size 16"),
        (dict(reset_tokens=10_000_000), "longer than"),
        (dict(batch_size=128, data="short.txt", reset_tokens=None), "too short for 128 streams"),
        (dict(model="gpt", preset="tiny", model_overrides={}), "cannot carry its state"),
    ],
)
def test_carried_state_settings_that_cannot_work_are_refused(make_cfg, tmp_path, changes, message):
    if "data" in changes:
        corpus = tmp_path / changes["data"]
        corpus.write_text("to be or not to be, that is the question. " * 30)
        changes = {**changes, "data": str(corpus)}
    with pytest.raises(ConfigError, match=message) as error:
        train(carried(make_cfg, **changes))
    assert "\n" not in str(error.value)


def test_reset_tokens_needs_carry_state(make_cfg):
    with pytest.raises(ConfigError, match="needs carry_state"):
        make_cfg(reset_tokens=32)


def test_the_neuro_model_trains_with_its_state_carried_and_resumes_exactly(make_cfg):
    neuro = dict(model="neuro", preset="tiny", model_overrides={}, steps=4, reset_tokens=48)
    straight = train(carried(make_cfg, "straight", **neuro))
    state = load_file(str(straight / "checkpoints/step_00000004/carried_state.safetensors"))
    assert state["x"].shape == (4, 256) and state["rho"].shape == (4, 32, 256)
    assert state["position"].tolist() == [16] and state["rho"].abs().sum() > 0
    cfg = carried(make_cfg, "resumed", **neuro)
    with pytest.raises(TrainingInterrupted):
        train(cfg, on_metrics=interrupt_at(2))
    resumed = train(resume_config(cfg.out_dir), resume=True)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
