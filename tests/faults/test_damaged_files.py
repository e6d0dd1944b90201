"""Damaged run files (truncated, garbage, wrong JSON type): every reader answers with exit
0 or one `error:` line, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bdh.cli import main
from bdh.errors import BDHError
from tests.faults.cli import cli

pytestmark = pytest.mark.usefixtures("single_thread")

FLAGS = [
    "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2",
    "--set", "mlp_internal_dim_multiplier=4", "--block-size", "16", "--batch-size", "4",
    "--eval-tokens", "64", "--no-progress", "--steps", "2", "--precision", "fp32",
]  # fmt: skip
FILES = ["metrics.jsonl", "config.json", "tokenizer.json", "train_config.json"]
DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x00\xff\xfe garbage \x80\n\x01",
    "json list": lambda data: b"[1, 2]\n",
    "wrong fields": lambda data: b'{"model_type": 5, "config": [], "type": 7, "step": "x"}\n',
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("good") / "run"
    with pytest.raises(SystemExit) as done:
        main(["train", *FLAGS, "--out", str(run)])
        raise SystemExit(0)
    assert done.value.code in (0, None)
    return run


def readers(run: Path) -> dict[str, list[str]]:
    return {
        "plot": ["plot", str(run), "--out", str(run.parent / "m.png")],
        "eval": ["eval", str(run), "--max-tokens", "64"],
        "generate": ["generate", str(run), "-p", "a", "-n", "3"],
        "resume": ["train", "--resume", str(run), "--steps", "3"],
    }


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("name", FILES)
def test_every_reader_answers_in_one_line(trained, tmp_path, capsys, name, damage):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / name
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    for reader, args in readers(run).items():
        code, err = cli(args, capsys)
        lines = err.strip().splitlines()
        if code != 0:
            assert len(lines) == 1 and lines[0].startswith("error: "), (reader, err)
        assert "Traceback" not in err, (reader, err)
    # the app's loaders: a BDHError (shown as one line), or the data
    from bdh.app import cache, live

    for load in (lambda: cache.load(str(run)), lambda: live.run_metrics(run)):
        try:
            load()
        except BDHError as err:
            assert "\n" not in str(err)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "json list", "wrong fields"])
def test_compare_reuse_refuses_a_damaged_report(tmp_path, capsys, damage):
    out = tmp_path / "cmp"
    out.mkdir()
    report = json.dumps({"runs": [{"name": "gpt-backprop", "train_config": {}}]}).encode()
    (out / "report.json").write_bytes(DAMAGE[damage](report))
    code, err = cli(["compare", "--out", str(out), "--reuse", "--models", "gpt-backprop",
                     "--steps", "1"], capsys)  # fmt: skip
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
