"""Property-based fuzz of `bdh train|generate|eval` flags: any values, any types; the
command exits 0 or with one `error:` line, never a traceback."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bdh
from bdh.checkpoint import save_checkpoint
from bdh.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

# Values of every kind a user might type: numbers in and out of range, words, escapes.
VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(
        [
            "0",
            "1e-3",
            "-1.5",
            "nan",
            "inf",
            "1e309",
            "0x10",
            "",
            " ",
            "true",
            "bdh",
            "gpt",
            "neuro",
            "cpu",
            "cuda",
            "auto",
            "bf16",
            "fp16",
            "\\n",
            "n_layer=1",
            "n_layer=x",
            "=",
            "-",
            "--",
            "none",
        ]
    ),  # fmt: skip
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
)
TRAIN_FLAGS = ["--model", "--preset", "--steps", "--batch-size", "--micro-batch-size",
               "--block-size", "--lr", "--min-lr", "--warmup-steps", "--seed", "--device",
               "--precision", "--eval-every", "--eval-tokens", "--log-every", "--keep-last",
               "--set", "--damping", "--tokenizer", "--data", "--learning-mode",
               "--reset-tokens", "--grad-clip", "--beta1"]  # fmt: skip
GENERATE_FLAGS = ["--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p",
                  "--seed", "--stop", "--device"]  # fmt: skip
EVAL_FLAGS = ["--block-size", "--batch-size", "--max-tokens", "--split", "--data",
              "--length", "--sequences", "--device"]  # fmt: skip
# Keep every training run tiny whatever else is drawn: these come last and win.
TRAIN_BOUNDS = ["--steps", "1", "--set", "n_layer=1", "--set", "n_embd=16", "--set",
                "n_head=1", "--set", "mlp_internal_dim_multiplier=2", "--eval-tokens",
                "32", "--no-progress", "--batch-size", "2", "--block-size", "8"]  # fmt: skip
_runs = itertools.count()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = bdh.BDH(
        bdh.preset("tiny", n_layer=1, n_embd=16, n_head=1, mlp_internal_dim_multiplier=2)
    )
    return save_checkpoint(tmp_path_factory.mktemp("fuzz") / "ck", model, bdh.ByteTokenizer())


def flags(names: list[str]) -> st.SearchStrategy[list[str]]:
    pair = st.tuples(st.sampled_from(names), VALUES).map(list)
    return st.lists(pair, max_size=3).map(lambda ps: [x for p in ps for x in p])


def check(args: list[str], capsys) -> None:
    try:
        main(args)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0) if not isinstance(done.code, str) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, (args, err)
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)


FUZZ = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@FUZZ
@given(drawn=flags(TRAIN_FLAGS))
def test_train_flags(drawn, tmp_path, capsys):
    out = tmp_path / f"run{next(_runs)}"
    check(["train", *drawn, *TRAIN_BOUNDS, "--out", str(out)], capsys)


@FUZZ
@given(drawn=flags(GENERATE_FLAGS))
def test_generate_flags(drawn, ckpt, capsys):
    check(["generate", str(ckpt), "-n", "4", *drawn, "--max-new-tokens", "4"], capsys)


@FUZZ
@given(drawn=flags(EVAL_FLAGS))
def test_eval_flags(drawn, ckpt, capsys):
    check(["eval", str(ckpt), *drawn, "--max-tokens", "64"], capsys)
