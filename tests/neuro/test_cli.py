"""`bdh train --model neuro` and `bdh generate` on its run directory."""

from __future__ import annotations

import pytest


def test_train_then_generate_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("bdh.train")
    from bdh.cli import main

    run = tmp_path / "run"
    args = [
        "train", "--model", "neuro", "--preset", "tiny", "--set", "n=32", "--set", "d=8",
        "--set", "k_wta=4", "--steps", "2", "--batch-size", "2", "--block-size", "8",
        "--eval-tokens", "64", "--learning-mode", "hybrid", "--prune-every", "1",
        "--prune-threshold", "0.05", "--out", str(run), "--device", "cpu",
    ]  # fmt: skip
    main(args)  # returns on success; an error would exit non-zero
    assert (run / "model.safetensors").is_file()
    capsys.readouterr()
    main(["generate", str(run), "-p", "ROMEO:", "-n", "12", "--seed", "1"])
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.encode("utf-8", "replace")) >= len("ROMEO:") + 1
