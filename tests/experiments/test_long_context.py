"""`bdh experiment long-context`: the smoke configuration end to end, and its refusals."""

from __future__ import annotations

import json

import pytest

from bdh.cli import main
from bdh.errors import ConfigError
from bdh.experiments.long_context import RUNS, SMOKE, LongContextSettings, run_long_context


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("long_context") / "report"
    report = run_long_context(LongContextSettings(out_dir=str(out), **SMOKE), command="smoke")
    return out, report


def test_smoke_run_writes_the_report(smoke_report):
    out, report = smoke_report
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "loss_by_position.png",
        "runs",
    }
    assert json.loads((out / "report.json").read_text()) == report
    assert list(report["runs"]) == list(RUNS)
    text = (out / "report.md").read_text()
    for name in RUNS:
        assert f"| {name} | " in text
    for run in report["runs"].values():
        buckets = run["by_position"]["buckets"]
        assert [b["label"] for b in buckets] == ["0-256", "256-600"]
        assert run["by_position"]["sequences"] == SMOKE["eval_sequences"]
        assert run["tokens_trained"] == SMOKE["steps"] * SMOKE["batch_size"] * SMOKE["block_size"]
    # Each run trained what it says: the carried ones with their streams and model flags.
    configs = {name: run["train_config"] for name, run in report["runs"].items()}
    assert not configs["independent"].get("carry_state")
    assert (
        configs["carried"]["carry_state"]
        and configs["carried"]["reset_tokens"] == SMOKE["reset_tokens"]
    )
    assert configs["carried-damped"]["model_overrides"] == {"damping": "alibi"}
    assert configs["no-bptt"]["model_overrides"] == {"no_bptt": True}
    assert [v["met"] in (True, False) for v in report["verdicts"]] == [True, True]
    assert "## The paper's claims next to ours" in text


def test_an_existing_report_directory_needs_force(smoke_report, capsys):
    out, _ = smoke_report
    with pytest.raises(SystemExit) as done:
        main(["experiment", "long-context", "--out", str(out), "--smoke"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1


def test_unknown_runs_are_refused():
    with pytest.raises(ConfigError, match="unknown runs"):
        LongContextSettings(out_dir="x", runs=["carried", "sideways"])
