"""`bdh train` / `bdh plot` from the command line: smoke run, signals, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bdh.cli import main
from bdh.train.state import list_checkpoints
from tests.train.conftest import TINY_FLAGS


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_then_generate_and_plot(tmp_path, capsys):
    out = tmp_path / "tiny"
    code, _, err = run_cli(["train", *TINY_FLAGS, "--steps", "3", "--out", str(out), "--log-every", "1"], capsys)
    assert code == 0, err
    code, text, err = run_cli(["generate", str(out), "--prompt", "ROMEO:", "-n", "20", "--seed", "1"], capsys)
    assert code == 0, err
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:")
    pytest.importorskip("matplotlib")
    code, text, err = run_cli(["plot", str(out)], capsys)
    assert code == 0, err
    png = out / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_dir_is_not_overwritten(tmp_path, capsys):
    """(f) through the CLI: one-line error, then --force starts over."""
    out = tmp_path / "run"
    args = ["train", *TINY_FLAGS, "--steps", "1", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 0
    code, _, err = run_cli(args, capsys)
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: run directory")
    assert run_cli([*args, "--force"], capsys)[0] == 0


def test_damaged_or_foreign_checkpoint_gives_one_line_error(tmp_path, capsys):
    """(e) through the CLI: truncated optimizer state, and a resume with another preset."""
    out = tmp_path / "run"
    assert run_cli(["train", *TINY_FLAGS, "--steps", "2", "--checkpoint-every", "1", "--out", str(out)], capsys)[0] == 0
    code, _, err = run_cli(["train", "--resume", str(out), "--preset", "small"], capsys)
    assert code == 1 and err.count("\n") == 1 and "preset='tiny'" in err
    opt = out / "checkpoints/step_00000002/optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    code, _, err = run_cli(["train", "--resume", str(out), "--steps", "3"], capsys)
    assert code == 1 and err.count("\n") == 1 and "corrupt or truncated" in err


def test_config_file_with_flag_override(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        'preset = "tiny"\nsteps = 2\nbatch-size = 2\nblock_size = 16\nlr = 0.004\nprogress = false\n'
        "eval_tokens = 64\n[model_overrides]\nn_layer = 1\nn_embd = 32\nn_head = 2\n"
        "mlp_internal_dim_multiplier = 4\n"
    )
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--config", str(config), "--lr", "0.002", "--out", str(out)], capsys)
    assert code == 0, err
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["lr"] == 0.002 and saved["batch_size"] == 2 and saved["model_overrides"]["n_embd"] == 32
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": 2, "lernrate": 1}')
    code, _, err = run_cli(["train", "--config", str(bad), "--out", str(tmp_path / "x")], capsys)
    assert code == 1 and "unknown training option(s): lernrate" in err


def test_sigint_saves_a_checkpoint_that_resumes(tmp_path, capsys):
    """(c) a real SIGINT to a training process: exit 130, a checkpoint, a working resume."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bdh", "train", *TINY_FLAGS, "--steps", "100000", "--log-every", "1",
           "--checkpoint-every", "100000", "--eval-every", "100000", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "--resume" in err
    (saved,) = list_checkpoints(out)
    step = int(saved.name.split("_")[1])
    assert step >= 3
    code, _, err = run_cli(["train", "--resume", str(out), "--steps", str(step + 2)], capsys)
    assert code == 0, err
    assert list_checkpoints(out)[-1].name == f"step_{step + 2:08d}"
    assert json.loads((out / "config.json").read_text())["train_step"] == step + 2


def test_plot_without_metrics_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(["plot", str(Path(tmp_path) / "nothing")], capsys)
    assert code == 1 and err.startswith("error: no metrics.jsonl")


def test_eval_defaults_to_the_training_block_size(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY_FLAGS, "--steps", "2", "--checkpoint-every", "2", "--out", str(out)]
    assert run_cli(args, capsys)[0] == 0
    step = list_checkpoints(out)[-1]
    for ckpt in (out, step):
        code, text, err = run_cli(["eval", str(ckpt), "--max-tokens", "256"], capsys)
        assert code == 0, err
        assert "in windows of 16 (the training block size" in text
        explicit = run_cli(["eval", str(ckpt), "--max-tokens", "256", "--block-size", "16"], capsys)
        assert explicit[1].split("|")[0] == text.split("|")[0]  # the same loss
    loose = tmp_path / "loose"
    loose.mkdir()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (loose / name).write_bytes((out / name).read_bytes())
    code, text, err = run_cli(["eval", str(loose), "--max-tokens", "512"], capsys)
    assert code == 0, err
    assert "in windows of 256 (the default" in text
    (out / "train_config.json").write_text("{not json")
    code, _, err = run_cli(["eval", str(out), "--max-tokens", "256"], capsys)
    assert code == 1 and err.strip().splitlines() == [
        f"error: run config {out / 'train_config.json'} is corrupt: no block_size"
    ]
