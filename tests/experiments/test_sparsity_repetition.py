"""`bdh experiment sparsity-repetition`: the smoke configuration end to end, and its refusals."""

from __future__ import annotations

import json

import pytest

from bdh.cli import main
from bdh.errors import ConfigError
from bdh.experiments.sparsity_repetition import (
    SMOKE,
    SparsityRepetitionSettings,
    make_sequences,
    phases,
    run_sparsity_repetition,
)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparsity_repetition") / "report"
    settings = SparsityRepetitionSettings(out_dir=str(out), **SMOKE)
    return out, run_sparsity_repetition(settings, command="smoke")


def test_smoke_run_writes_the_report(smoke_report):
    out, report = smoke_report
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "density_by_position.png",
        "runs",
    }
    assert json.loads((out / "report.json").read_text()) == report
    assert report["model"]["trained_here"] and report["model"]["final_val_loss"] is not None
    s = SparsityRepetitionSettings(out_dir="x", **SMOKE)
    n_layer = report["model"]["model_config"]["n_layer"]
    for name in ("x", "y", "xy"):
        curve = report["density_by_position"][name]
        assert len(curve) == n_layer and all(len(row) == s.length for row in curve)
        assert all(0.0 <= v <= 1.0 for row in curve for v in row)
        assert [r["layer"] for r in report["summary"][name]["layers"]] == list(range(n_layer))
    assert len(report["loss_by_position"]) == s.length - 1
    text = (out / "report.md").read_text()
    for heading in ("## x (x_sparse) density by phase", "## y_sparse density by phase",
                    "## x*y (the paper's y) density by phase", "## Loss by phase",
                    "## The paper's numbers next to ours", "## Verdict"):  # fmt: skip
        assert heading in text
    header = "| layer | " + " | ".join(phases(s)) + " |"
    assert text.count(header) == 3
    assert text.count("\n| 0 | ") == 3 and "| while repeating (late repeats) | about 2.5% |" in text
    assert {v["signal"] for v in report["verdicts"]} == {"x", "y", "xy"}
    assert "## Control: the repeated word against fresh words at the same positions" in text
    for name in ("x", "y", "xy"):
        effect = report["repetition_effect"][name]
        assert [r["layer"] for r in effect["layers"]] == list(range(n_layer))
        d = effect["all_layers"]
        assert d["fresh_minus_repeated"]["mean"] == pytest.approx(d["fresh"] - d["repeated"])


def test_the_sequences_follow_the_protocol():
    s = SparsityRepetitionSettings(
        out_dir="x", words=5, warmup=10, word_length=4, repeats=3, seed=7
    )
    texts, controls, words = make_sequences(s)
    assert (texts, controls) == make_sequences(s)[:2]  # seeded
    assert len(set(words)) == 5
    for text, control, word in zip(texts, controls, words):
        assert len(text) == len(control) == s.length
        assert text[10:] == f" {word}" * 3 and text[:10].isalpha()
        # The control: the same warm-up and first word, then fresh words in the same format.
        assert control[:15] == text[:15] and control[15:] != text[15:]
        assert [len(w) for w in control[10:].split(" ")] == [0, 4, 4, 4]
    assert phases(s)["warm-up (random letters)"] == (1, 10)  # token 0 reads nothing
    assert phases(s)["word, 1st showing"] == (10, 15)


def test_the_cli_reads_a_given_checkpoint(smoke_report, tmp_path, capsys):
    out, _ = smoke_report
    main(["experiment", "sparsity-repetition", "--out", str(tmp_path / "r"), "--smoke",
          "--checkpoint", str(out / "runs" / "model")])  # fmt: skip
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert not report["model"]["trained_here"] and not (tmp_path / "r" / "runs").exists()
    assert report["model"]["is_default_recipe"]  # the smoke run trained the smoke recipe
    assert "than fresh words in every layer" in capsys.readouterr().out


def test_refusals(smoke_report, tmp_path, capsys):
    out, _ = smoke_report
    for args in (
        ["--out", str(out), "--smoke"],
        ["--out", str(tmp_path / "n"), "--checkpoint", str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as done:
            main(["experiment", "sparsity-repetition", *args])
        assert done.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="at least 2 repeats"):
        SparsityRepetitionSettings(out_dir="x", repeats=1)
