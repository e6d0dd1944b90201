"""`bdh compare`: settings validation, measurements of a trained entry, report rendering."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from bdh.errors import ConfigError
from bdh.experiments.compare import (
    DEFAULT_ENTRIES,
    CompareSettings,
    _train_and_measure,
    _train_config,
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
        eval_tokens=64, contexts=[4, 300], threads=1, seeds=1,
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
    assert report["wall_time_s"] == 0.0  # nothing was trained by this call
    assert (tmp_path / "report.md").is_file()

    cfg = json.loads(json.dumps(_train_config(s, entry).to_dict()))
    run_dir = tmp_path / "runs" / "gpt-backprop" / f"tokens-seed{s.seed}"
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


def test_t_interval_and_aggregate_by_hand():
    from bdh.experiments.compare import aggregate, t_interval

    mean, half = t_interval([1.0, 2.0, 3.0])  # sd 1, t(0.975, 2) = 4.3027
    assert mean == 2.0 and half == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
    assert t_interval([5.0]) == (5.0, None)
    rows = [
        {"name": "a", "seed": s, "final_val_loss": v} for s, v in ((1, 1.0), (2, 2.0), (3, 3.0))
    ]
    row = aggregate(rows)
    assert row["seeds"] == [1, 2, 3] and row["final_val_loss"] == 2.0
    assert row["final_val_loss_ci"] == pytest.approx(2.484138, rel=1e-6)
    assert row["tokens"] is None and row["tokens_ci"] is None  # absent everywhere


def test_plan_runs_seeds_budgets_and_studies(tmp_path):
    from bdh.experiments.compare import plan_runs

    s = settings(tmp_path, entries=["gpt-backprop", "bdh-hebbian"], seeds=2, wall_budget_s=5.0,
                 hybrid_lrs=[1e-3, 1e-2], prune_thresholds=[0.01], homeostasis=True)  # fmt: skip
    runs = plan_runs(s)
    count = {}
    for run in runs:
        count[(run.study, run.budget)] = count.get((run.study, run.budget), 0) + 1
    assert count == {("main", "tokens"): 4, ("main", "wall"): 4, ("hybrid-sweep", "tokens"): 4,
                     ("pruning", "tokens"): 1, ("homeostasis", "tokens"): 2}  # fmt: skip
    assert len({run.key for run in runs}) == len(runs)
    assert {run.seed for run in runs} == {s.seed, s.seed + 1}
    sweep = [run for run in runs if run.study == "hybrid-sweep"]
    assert {run.entry["options"]["hebbian_lr"] for run in sweep} == {1e-3, 1e-2}
    assert all(run.entry["learning_mode"] == "hybrid" for run in sweep)
    wall = _train_config(s, runs[4].entry, runs[4].seed, "wall")
    assert wall.time_budget_s == 5.0 and wall.steps == 100 * s.steps
    with pytest.raises(ConfigError):
        CompareSettings(seeds=0)
    with pytest.raises(ConfigError):
        CompareSettings(wall_budget_s=0.0)


def test_degradation_sparsity_by_hand():
    from bdh.experiments.compare import degradation_sparsity

    points = [
        {"weight_sparsity": 0.2, "val_loss": 2.01},
        {"weight_sparsity": 0.5, "val_loss": 2.03},
        {"weight_sparsity": 0.7, "val_loss": 2.13},  # crosses 2.05 a fifth of the way from 0.5
    ]
    found = degradation_sparsity(points, 2.0, 0.05)
    assert found["reached"] and found["sparsity"] == pytest.approx(0.54)
    held = degradation_sparsity(points[:2], 2.0, 0.05)
    assert not held["reached"] and held["sparsity"] == 0.5


def test_reuse_refuses_a_report_directory_without_runs(tmp_path):
    out = tmp_path / "committed"
    out.mkdir()
    (out / "report.md").write_text("committed report\n")
    with pytest.raises(ConfigError, match="holds no runs to reuse"):
        run_compare(settings(out, entries=["gpt-backprop"], reuse=True))
    assert (out / "report.md").read_text() == "committed report\n"


def test_report_of_seeds_budgets_and_studies_renders(tmp_path):
    """Rendering of a full report (seeds, wall budget, sweep, pruning, homeostasis) from
    one trained run copied under every label, with made-up losses."""
    from bdh.experiments.compare import findings, group_rows

    s = settings(tmp_path, seeds=2, wall_budget_s=1.0, hybrid_lrs=[1e-3], prune_thresholds=[0.01, 0.1],
                 homeostasis=True)  # fmt: skip
    base = _train_and_measure(asdict(s), asdict(DEFAULT_ENTRIES["bdh-backprop"]))
    runs = []
    for i, (study, name, budget, threshold) in enumerate([
        ("main", "bdh-backprop", "tokens", 0.0), ("main", "bdh-backprop", "wall", 0.0),
        ("main", "bdh-hybrid", "tokens", 0.0), ("main", "bdh-hybrid", "wall", 0.0),
        ("hybrid-sweep", "hybrid-oja-0.001", "tokens", 0.0),
        ("pruning", "prune-0.01", "tokens", 0.01), ("pruning", "prune-0.1", "tokens", 0.1),
        ("homeostasis", "bdh-backprop-homeostasis", "tokens", 0.0),
    ]):  # fmt: skip
        for seed in (s.seed, s.seed + 1) if study != "pruning" else (s.seed,):
            run = json.loads(json.dumps(base))
            run.update(study=study, name=name, budget=budget, seed=seed)
            run["train_config"]["prune_threshold"] = threshold
            run["weight_sparsity"] = 10 * threshold
            for m in run["metrics"]:
                if "val_loss" in m:
                    m["val_loss"] = 3.0 + 0.01 * i + 0.001 * (seed - s.seed) + 0.5 * threshold
            runs.append(run)
    rows = [summarize(r) for r in runs]
    groups = group_rows(rows)
    report = {
        "settings": asdict(s),
        "machine": {
            "processor": "test cpu",
            "cpus": 2,
            "torch": torch.__version__,
            "load_average_at_start": [1.0],
        },
        "floors": {
            "uniform": 5.545,
            "validation_split": {"unigram": 3.35},
            "scored_sample": {"unigram": 3.34},
            "scored_tokens": 64,
        },  # fmt: skip
        "summary": [g for g in groups if g["study"] == "main" and g["budget"] == "tokens"],
        "groups": groups,
        "rows": rows,
        "runs": runs,
    }
    report["findings"] = found = findings(report)
    assert found["hybrid_minus_backprop_tokens"] == pytest.approx(0.02)
    # unpruned 3.0; threshold 0.01: sparsity 0.1, loss 3.055 crosses 3.05 at 0.1 * 0.05 / 0.055
    assert found["pruning"]["reached"] and found["pruning"]["sparsity"] == pytest.approx(0.1 / 1.1)
    assert found["homeostasis"]["final_val_loss"]["on"] == pytest.approx(3.0705)
    text = markdown_report(report)
    for needle in ("## Same training wall time", "## Hybrid: backprop + Oja", "## Pruning curve",
                   "## Homeostasis", "| unigram | 3.350 | 3.340 |", "± ", "--wall-budget 1",
                   "load average 1.0 at the start", "## Seed 002's research questions",
                   "5. **Hybrid benefits**"):  # fmt: skip
        assert needle in text, needle
    plot_report(report, tmp_path)
    for png in ("val_loss.png", "hybrid_sweep.png", "pruning.png", "homeostasis.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_count_model_floors_on_the_bundled_corpus():
    from bdh.baselines.ngram import ngram_floors, ngram_loss
    from bdh.data import load_corpus

    # by hand: train "abab", V = 2, k = 0.1: P(a) = 2.1 / 4.2, P(b | a) = 2.1 / 2.2
    train = np.array([0, 1, 0, 1])
    assert ngram_loss(train, np.array([0]), 1, 2) == pytest.approx(-np.log(2.1 / 4.2))
    assert ngram_loss(train, np.array([0, 1]), 2, 2) == pytest.approx(-np.log(2.1 / 2.2))
    corpus, _ = load_corpus(None, "byte", 0.1)
    floors = ngram_floors(corpus.train, corpus.val, 256)
    assert floors["unigram"] == pytest.approx(3.35, abs=0.005)
    assert floors["bigram"] == pytest.approx(2.49, abs=0.006)
    assert floors["trigram"] == pytest.approx(2.07, abs=0.005)


def test_smoke_comparison_writes_every_section(tmp_path, capsys):
    from bdh.cli import main

    out = tmp_path / "smoke"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 200)
    main(["compare", "--smoke", "--out", str(out), "--data", str(corpus)])
    data = json.loads((out / "report.json").read_text())
    assert {(g["study"], g["budget"]) for g in data["groups"]} == {
        ("main", "tokens"), ("main", "wall"), ("hybrid-sweep", "tokens"), ("pruning", "tokens"),
        ("homeostasis", "tokens"),
    }  # fmt: skip
    assert all(len(g["seeds"]) == 2 for g in data["groups"] if g["study"] != "pruning")
    assert set(data["floors"]["scored_sample"]) == {"unigram", "bigram", "trigram"}
    text = (out / "report.md").read_text()
    for needle in ("## Floors", "## Same training wall time", "## Pruning curve",
                   "## Seed 002's research questions", "bdh compare --smoke"):  # fmt: skip
        assert needle in text, needle
    assert "bdh-hebbian (wall)" in capsys.readouterr().out
