"""Bad input gets one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bdh
from bdh.checkpoint import save_checkpoint
from bdh.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def byte_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "byte"
    save_checkpoint(path, bdh.BDH(bdh.preset("tiny")), bdh.ByteTokenizer())
    return path


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory):
    tok = bdh.CharTokenizer.from_text("abcdefgh \n")
    path = tmp_path_factory.mktemp("ck") / "char"
    save_checkpoint(path, bdh.BDH(bdh.preset("tiny", vocab_size=tok.vocab_size)), tok)
    return path


def test_generate_streams_and_is_reproducible(byte_ckpt, capsys) -> None:
    args = ["generate", str(byte_ckpt), "-p", "ROMEO:", "-n", "30", "--seed", "4"]
    code, first, _ = run_cli(args, capsys)
    assert code == 0 and first.startswith("ROMEO:")
    _, second, _ = run_cli(args, capsys)
    assert first == second


def test_generate_batch_of_prompts(byte_ckpt, capsys) -> None:
    code, out, _ = run_cli(["generate", str(byte_ckpt), "-p", "a", "-p", "bc", "-n", "5", "--greedy"], capsys)
    assert code == 0 and "--- [0]\na" in out and "--- [1]\nbc" in out


def test_eval_prints_loss_and_bits_per_byte(byte_ckpt, capsys) -> None:
    code, out, _ = run_cli(["eval", str(byte_ckpt), "--max-tokens", "512", "--block-size", "64"], capsys)
    assert code == 0 and "val loss" in out and "bits per byte" in out
    code, out, _ = run_cli(["eval", str(byte_ckpt), "--max-tokens", "3000", "--whole"], capsys)
    assert code == 0 and "3000 tokens" in out and "as one sequence" in out


def test_temperature_zero_is_greedy(byte_ckpt, capsys) -> None:
    greedy = run_cli(["generate", str(byte_ckpt), "-p", "ab", "-n", "12", "--greedy"], capsys)
    assert greedy[0] == 0
    for seed in ("1", "2"):
        args = ["generate", str(byte_ckpt), "-p", "ab", "-n", "12", "--temperature", "0", "--seed", seed]
        assert run_cli(args, capsys) == greedy
    code, out, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0 and "0 means greedy" in " ".join(out.split())


def test_stop_reads_backslash_escapes(char_ckpt, capsys) -> None:
    from bdh.cli.inference import unescape

    assert unescape(r"a\nb\tc\\n\q") == "a\nb\tc\\n\\q"
    args = ["generate", str(char_ckpt), "-p", "a", "-n", "200", "--seed", "3"]
    code, full, _ = run_cli(args, capsys)
    generated = full[1:-1]  # the prompt, then the text, then a newline
    assert code == 0 and "\n" in generated
    code, stopped, _ = run_cli([*args, "--stop", r"\n"], capsys)  # as typed in a shell: '\n'
    assert code == 0 and stopped == "a" + generated[: generated.index("\n")] + "\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "{byte}", "-p", ""], "prompt is empty"),
        (["generate", "{byte}", "--temperature", "-1"], "--temperature"),
        (["generate", "{byte}", "--top-p", "0"], "--top-p"),
        (["generate", "{byte}", "--top-p", "1.01"], "--top-p"),
        (["generate", "{char}", "-p", "xyz"], "not in the tokenizer's vocabulary"),
        (["generate", "{missing}"], "no checkpoint"),
        (["generate", "{byte}", "--device", "gpu0"], "unknown device"),
        (["eval", "{byte}", "--device", "cuda:7x"], "unknown device"),
        (["eval", "{byte}", "--data", "{missing}"], "no corpus"),
        (["eval", "{byte}", "--data", "{short}", "--block-size", "64"], "too short"),
        (["eval", "{byte}", "--data", "{empty}"], "empty"),
        (["convert", "{missing}", "{missing}"], "no state_dict file"),
        (["no-such-command"], "No such command"),
    ],
)
def test_bad_input(args, needle, byte_ckpt, char_ckpt, tmp_path, capsys) -> None:
    (tmp_path / "short.txt").write_text("too short")
    (tmp_path / "empty.txt").write_text("")
    paths = dict(
        byte=byte_ckpt, char=char_ckpt, missing=tmp_path / "missing",
        short=tmp_path / "short.txt", empty=tmp_path / "empty.txt",
    )  # fmt: skip
    code, _, err = run_cli([a.format(**paths) for a in args], capsys)
    assert_one_line_error(code, err, needle)


def test_corrupt_and_mismatched_checkpoints(byte_ckpt, tmp_path, capsys) -> None:
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(byte_ckpt, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    code, _, err = run_cli(["generate", str(corrupt)], capsys)
    assert_one_line_error(code, err, "corrupt")

    mismatched = tmp_path / "mismatched"
    save_checkpoint(mismatched, bdh.BDH(bdh.preset("tiny", n_head=2)), bdh.ByteTokenizer())
    shutil.copy(byte_ckpt / "config.json", mismatched / "config.json")
    code, _, err = run_cli(["generate", str(mismatched)], capsys)
    assert_one_line_error(code, err, "shape")


def test_entry_point_prints_no_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bdh", "generate", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: no checkpoint at '{tmp_path / 'missing'}'"]


def test_help_lists_commands(capsys) -> None:
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for command in ("generate", "eval", "convert"):
        assert command in out


# Run in a fresh interpreter: delays the first import of torch (printing a marker first),
# then starts the CLI the way the console script of pyproject.toml, or `python -m bdh`, does.
SLOW_TORCH_IMPORT = """
import builtins, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
real_import = builtins.__import__
def slow_import(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules:
        print("importing torch", file=sys.stderr, flush=True)
        time.sleep(60)
    return real_import(name, *args, **kwargs)
builtins.__import__ = slow_import
"""


def _console_script() -> str:
    import re
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    module, function = re.search(r'^bdh = "([\w.]+):(\w+)"$', pyproject, re.M).groups()
    return f"import importlib\nsys.exit(getattr(importlib.import_module({module!r}), {function!r})())"


@pytest.mark.parametrize(
    "start",
    [_console_script(), "import runpy\nrunpy.run_module('bdh', run_name='__main__', alter_sys=True)"],
    ids=["console-script", "python-m"],
)
def test_ctrl_c_while_importing_exits_130_without_traceback(start, tmp_path) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_TORCH_IMPORT + start, "generate", str(tmp_path / "missing")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr.readline() == "importing torch\n"
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, err
    finally:
        proc.kill()
    assert "Traceback" not in err and err.strip() == "error: interrupted"


def test_omp_wait_policy_defaults_to_passive_before_torch_loads() -> None:
    probe = (
        "import os, sys\nfrom bdh.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.split()[-2:] == ["PASSIVE", "False"], out.stderr
    for users in ("ACTIVE", ""):  # a value the user set, even empty, is kept
        env["OMP_WAIT_POLICY"] = users
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        assert out.stdout.splitlines()[-1] == f"{users} False", out.stderr
