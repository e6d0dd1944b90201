"""`bdh compare`: settings validation, measurements of a trained entry, report rendering."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from bdh.errors import ConfigError
from bdh.experiments.compare import (
    DEFAULT_ENTRIES,
    CompareSettings,
    _train_and_measure,
    markdown_report,
    plot_report,
    run_compare,
    summarize,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def settings(tmp_path, **changes) -> CompareSettings:
    pytest.importorskip("bdh.train")
    base = dict(
        out_dir=str(tmp_path), steps=2, batch_size=2, block_size=8, eval_every=1,
        eval_tokens=64, contexts=[4, 300], threads=1,
    )  # fmt: skip
    return CompareSettings(**{**base, **changes})


def test_settings_reject_unknown_entries_and_bad_sizes(tmp_path):
    with pytest.raises(ConfigError, match="unknown model entries"):
        CompareSettings(entries=["bdh-backprop", "lstm"])
    with pytest.raises(ConfigError):
        CompareSettings(steps=0)
    with pytest.raises(ConfigError):
        CompareSettings(contexts=[])


def test_cli_reports_bad_entry_in_one_line(capsys):
    from bdh.cli import main

    with pytest.raises(SystemExit) as done:
        main(["compare", "--models", "nope", "--out", "/nonexistent/x"])
    assert done.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model entries")


@pytest.mark.parametrize("name", ["gpt-backprop", "bdh-hebbian"])
def test_one_entry_is_trained_and_measured(tmp_path, name):
    s = settings(tmp_path)
    result = _train_and_measure(asdict(s), asdict(DEFAULT_ENTRIES[name]))
    row = summarize(result)
    assert row["final_val_loss"] is not None and row["tokens"] == 2 * 2 * 8
    assert row["tokens_per_s"] > 0 and row["peak_rss_mib"] > 0
    if name == "gpt-backprop":
        assert result["state_bytes"]["300"] is None  # beyond the block size
        assert row["activation_sparsity"] == 0.0  # GELU is never exactly zero
    else:
        assert result["state_bytes"]["4"] == result["state_bytes"]["300"]  # constant-size state
        assert 0 < row["activation_sparsity"] < 1
        assert any("hebbian_update" in m for m in result["metrics"])

    report = {
        "settings": asdict(s),
        "machine": {"processor": "test cpu", "cpus": 2, "torch": torch.__version__},
        "summary": [row],
        "runs": [result],
    }
    text = markdown_report(report)
    assert name in text and "| 4 | 300 |" in text
    plot_report(report, tmp_path)
    for png in ("val_loss.png", "throughput_memory.png", "sparsity.png", "state_memory.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.slow
def test_run_compare_writes_the_full_report(tmp_path):
    s = settings(tmp_path, entries=["gpt-backprop", "bdh-hybrid", "bdh-hebbian"])
    run_compare(s)
    data = json.loads((tmp_path / "report.json").read_text())
    assert [r["name"] for r in data["summary"]] == s.entries
    text = (tmp_path / "report.md").read_text()
    assert "Seed 002's comparison table" in text and "BDH (Hebbian Only)" in text


def test_reuse_loads_a_run_with_the_same_config(tmp_path):
    from bdh.experiments.compare import _reusable, _train_config

    s = settings(tmp_path, entries=["gpt-backprop"], reuse=True)
    entry = asdict(DEFAULT_ENTRIES["gpt-backprop"])
    result = _train_and_measure(asdict(s), entry)
    (tmp_path / "report.json").write_text(json.dumps({"runs": [result]}))
    report = run_compare(s)  # would train in a fresh process if the run were not reused
    run = report["runs"][0]
    assert run["reused"] and run["metrics"] == result["metrics"]
    assert (tmp_path / "report.md").is_file()

    cfg = json.loads(json.dumps(_train_config(s, entry).to_dict()))
    run_dir = tmp_path / "runs" / "gpt-backprop"
    assert _reusable(result, cfg, run_dir)
    assert not _reusable(result, {**cfg, "steps": 3}, run_dir)
    assert not _reusable(result, cfg, tmp_path / "missing")
    assert not _reusable(None, cfg, run_dir)


def test_cli_refuses_an_existing_report_directory_without_force(tmp_path, capsys):
    from bdh.cli import main
    from bdh.cli.compare import compare

    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("committed report\n")
    with pytest.raises(SystemExit) as done:
        main(["compare", "--models", "gpt-backprop", "--out", str(out)])
    assert done.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; use --force" in err[0]
    assert (out / "report.md").read_text() == "committed report\n"
    with pytest.raises(SystemExit):
        main(["compare", "--models", "gpt-backprop", "--out", str(out), "--reuse", "--force"])
    assert "contradict" in capsys.readouterr().err
    default = next(p.default for p in compare.params if p.name == "out_dir")
    assert default == CompareSettings().out_dir and not default.startswith("docs")
