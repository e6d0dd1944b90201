"""Training from a checkpoint (`init_from`, `bdh train --init-from`): fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch

import bdh
from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.errors import ConfigError
from bdh.merge import merge_models
from bdh.train import train
from tests.test_cli import assert_one_line_error, run_cli
from tests.train.conftest import TINY_MODEL


@pytest.fixture
def start(tmp_path):
    """A saved merged BDH: a width no preset has and RoPE frequencies no fresh model derives."""
    torch.manual_seed(3)
    config = bdh.BDHConfig(**{**TINY_MODEL, "dropout": 0.0})
    merged = merge_models(bdh.BDH(config), bdh.BDH(config))
    return save_checkpoint(tmp_path / "start", merged, bdh.ByteTokenizer())


def test_a_run_starts_from_the_checkpoints_weights(start, make_cfg):
    # A learning rate of 1e-12 and no weight decay: the weights stay where they started.
    cfg = make_cfg(
        init_from=str(start), model_overrides={}, steps=2, lr=1e-12, min_lr=0.0, weight_decay=0.0
    )
    run = train(cfg)
    before, _ = load_checkpoint(start)
    after, _ = load_checkpoint(run)
    assert after.config == before.config  # the checkpoint's width, not the preset's
    for name, tensor in before.state_dict().items():
        torch.testing.assert_close(after.state_dict()[name], tensor, rtol=0, atol=1e-9)
    # With a real learning rate the same run moves away from it (the training is real).
    moved, _ = load_checkpoint(
        train(make_cfg("moved", init_from=str(start), model_overrides={}, steps=2))
    )
    assert not torch.equal(moved.encoder, before.encoder)
    assert torch.equal(moved.attn.freqs, before.attn.freqs)  # a buffer, carried over


def test_init_from_is_refused_with_model_overrides_or_another_family(start, make_cfg):
    with pytest.raises(ConfigError, match="model_overrides"):
        make_cfg(init_from=str(start))  # make_cfg sets TINY_MODEL overrides
    with pytest.raises(ConfigError, match="holds a bdh model, not gpt"):
        train(make_cfg(init_from=str(start), model_overrides={}, model="gpt"))


def test_init_from_needs_the_runs_tokenizer(start, make_cfg):
    with pytest.raises(ConfigError, match="another tokenizer"):
        train(make_cfg(init_from=str(start), model_overrides={}, tokenizer="char"))


def test_cli_init_from(start, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["train", "--init-from", str(start), "--steps", "1", "--block-size", "16", "--batch-size", "2",
            "--eval-tokens", "64", "--no-progress", "--out", str(out)]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "train_config.json").read_text())["init_from"] == str(start)
    code, _, err = run_cli(
        ["train", "--init-from", str(tmp_path / "none"), "--out", str(tmp_path / "x")], capsys
    )
    assert_one_line_error(code, err, "no checkpoint")
