"""`bdh eval --whole --by-position`: the bucket table, its JSON and PNG, and refusals."""

from __future__ import annotations

import json

import pytest

import bdh
from bdh.checkpoint import save_checkpoint
from tests.test_cli import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "byte"
    save_checkpoint(path, bdh.BDH(bdh.preset("tiny")), bdh.ByteTokenizer())
    return path


@pytest.fixture
def short_text(tmp_path):
    path = tmp_path / "short.txt"  # a val split of 200 bytes
    path.write_bytes(bytes(range(32, 127)) * 21 + b"abcde")
    return path


def test_writes_the_table_and_the_json(ckpt, tmp_path, capsys) -> None:
    out_json = tmp_path / "pos.json"
    args = ["eval", str(ckpt), "--whole", "--by-position", "--length", "3000", "--sequences", "2"]
    code, out, err = run_cli([*args, "--json", str(out_json)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "2 x 3000 tokens of val split of" in lines[0] and "no token is read twice" in lines[0]
    assert [line.split()[0] for line in lines[2:6]] == ["0-256", "256-1k", "1k-3000", "all"]
    assert lines[5].split()[1] == str(2 * 2999)
    record = json.loads(out_json.read_text())
    assert record["checkpoint"] == str(ckpt) and record["repeats"] is False
    assert record["sequences"] == 2 and record["length"] == 3000 and len(record["starts"]) == 2
    assert [b["label"] for b in record["buckets"]] == ["0-256", "256-1k", "1k-3000"]
    assert [b["tokens"] for b in record["buckets"]] == [2 * 255, 2 * 768, 2 * 1976]
    assert record["curve"][0]["start"] == 1 and record["curve"][-1]["end"] == 3000
    # An existing output is refused, untouched, unless --force.
    before = out_json.read_text()
    code, _, err = run_cli([*args, "--json", str(out_json)], capsys)
    assert_one_line_error(code, err, "exists; use --force")
    assert out_json.read_text() == before


def test_draws_the_plot(ckpt, tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out_png = tmp_path / "pos.png"
    args = [
        "eval",
        str(ckpt),
        "--whole",
        "--by-position",
        "--length",
        "1500",
        "--plot",
        str(out_png),
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and f"wrote {out_png}" in out, err
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "exists; use --force")
    code, _, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err


def test_a_longer_text_by_appending_or_repeating(ckpt, short_text, tmp_path, capsys) -> None:
    base = ["eval", str(ckpt), "--whole", "--by-position", "--data", str(short_text)]
    code, _, err = run_cli([*base, "--length", "500"], capsys)
    assert_one_line_error(code, err, "fewer than the length 500")
    out_json = tmp_path / "repeat.json"
    code, out, err = run_cli(
        [*base, "--length", "500", "--repeat", "--json", str(out_json)], capsys
    )
    assert code == 0, err
    assert "the text repeats from position 200 on" in out.splitlines()[0]
    record = json.loads(out_json.read_text())
    assert record["repeats"] is True and record["repeat_from_position"] == 200
    assert record["text_tokens"] == 200 and "(200 tokens)" in record["source"]
    code, out, err = run_cli([*base, "--length", "500", "--append", str(short_text)], capsys)
    assert code == 0, err
    assert f"+ {short_text} (2000 tokens); no token is read twice" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--length", "1"], "--length"),
        (["--sequences", "0"], "--sequences"),
        (["--length", "200000"], "fewer than the length 200000"),
        (["--length", "111540", "--sequences", "2"], "only 1 distinct sequences"),
        (["--max-tokens", "100"], "not --max-tokens"),
        (["--json", "{tmp}/no/such/dir/x.json"], "no directory"),
        (["--data", "{tmp}/missing"], "no corpus"),
    ],
)
def test_bad_input(extra, needle, ckpt, tmp_path, capsys) -> None:
    args = [a.format(tmp=tmp_path) for a in extra]
    code, _, err = run_cli(["eval", str(ckpt), "--whole", "--by-position", *args], capsys)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--by-position"], "add --whole"),
        (["--whole", "--length", "100"], "--length: only with --by-position"),
        (["--json", "x.json", "--repeat"], "--repeat, --json: only with --by-position"),
    ],
)
def test_options_that_need_each_other(args, needle, ckpt, capsys) -> None:
    code, _, err = run_cli(["eval", str(ckpt), *args], capsys)
    assert_one_line_error(code, err, needle)
