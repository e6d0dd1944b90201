"""`bdh experiment synapses`: the smoke configuration end to end, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bdh.cli import main
from bdh.errors import ConfigError
from bdh.experiments.synapses import CONCEPTS, SMOKE, SynapseSettings, run_synapses, sentences


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("synapses") / "report"
    return out, run_synapses(SynapseSettings(out_dir=str(out), **SMOKE), command="smoke")


def test_smoke_run_writes_the_report(smoke_report):
    out, report = smoke_report
    assert {p.name for p in out.iterdir()} == {
        "report.md", "report.json", "degree_distribution.png", "selectivity.png", "runs",
    }  # fmt: skip
    assert json.loads((out / "report.json").read_text()) == report
    n_layer = report["model"]["model_config"]["n_layer"]
    for key in ("degree_distribution", "degree_distribution_untrained"):
        assert [r["layer"] for r in report[key]["layers"]] == list(range(1, n_layer))
    assert [c["concept"] for c in report["concepts"]] == [c.name for c in CONCEPTS]
    for c in report["concepts"]:
        for key in ("true_labels", "shuffled_labels"):
            rows = c[key]["candidates"]
            assert len(rows) == SMOKE["candidates"]
            t = rows[0]["held_out"]
            assert (
                t["U_max"] == t["n_inside"] * t["n_outside"] == 16 and 0 <= t["U"] <= 16
            )  # 2 x 2 a side
            assert t["rank_biserial"] == pytest.approx(2 * t["U"] / t["U_max"] - 1)
    text = (out / "report.md").read_text()
    for heading in ("## Degree distribution of the thresholded sigma (Fig. 11)",
                    "## Monosemantic synapses: selection split, held-out test, shuffled control",
                    "## Verdict", "## What was assumed"):  # fmt: skip
        assert heading in text
    assert text.count("| trained | ") == text.count("| untrained | ") == n_layer - 1
    for c in CONCEPTS:
        assert f"| {c.name} vs {c.contrast_name} | true |" in text
        assert f"| {c.name} vs {c.contrast_name} | shuffled |" in text
    assert "U = 2368 of 2500" in text


def test_the_splits_share_no_template_and_no_word():
    s = SynapseSettings(out_dir="x")
    for c in CONCEPTS:
        (sel, sel_labels, _), (held, held_labels, held_words) = (
            sentences(c, s, 0),
            sentences(c, s, 1),
        )
        assert list(np.bincount(held_words)) == [10] * 10  # 10 templates for each of 10 words
        assert len(sel) == len(held) == 100 and sel_labels.sum() == held_labels.sum() == 50
        assert not set(sel) & set(held)
        sel_words = set(c.words[0::2]) | set(c.contrast[0::2])
        held_words = set(c.words[1::2]) | set(c.contrast[1::2])
        assert not sel_words & held_words
        for text, label in zip(held, held_labels):
            assert any(f" {w}" in text for w in (c.words if label else c.contrast)[1::2])
        assert np.all(held_labels[:50]) and not np.any(held_labels[50:])


def test_the_cli_reads_a_given_checkpoint(smoke_report, tmp_path, capsys):
    out, _ = smoke_report
    main(["experiment", "synapses", "--out", str(tmp_path / "r"), "--smoke",
          "--checkpoint", str(out / "runs" / "model")])  # fmt: skip
    assert not json.loads((tmp_path / "r" / "report.json").read_text())["model"]["trained_here"]
    assert "royalty vs commoners: held out U = " in capsys.readouterr().out


def test_refusals(smoke_report, gpt_run, tmp_path, capsys):
    out, _ = smoke_report
    for args in (
        ["--out", str(out), "--smoke"],
        ["--out", str(tmp_path / "n"), "--checkpoint", gpt_run],
    ):
        with pytest.raises(SystemExit) as done:
            main(["experiment", "synapses", *args])
        assert done.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(ConfigError, match="at most 20 templates"):
        SynapseSettings(out_dir="x", templates=40)


@pytest.fixture
def gpt_run(tmp_path):
    import torch

    from bdh.baselines.gpt import GPT, GPTConfig
    from bdh.checkpoint import save_checkpoint
    from bdh.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2, block_size=16, vocab_size=256))
    return str(save_checkpoint(tmp_path / "gpt", model, ByteTokenizer()))
