"""`bdh experiment scaling`: the smoke configuration end to end, the grids' models and
parameter counts (the paper grid built on the meta device, never trained), and refusals."""

from __future__ import annotations

import json

import pytest

from bdh.cli import main
from bdh.errors import ConfigError
from bdh.experiments.scaling import (
    FAMILIES,
    GRIDS,
    MATCH_TOLERANCE,
    SMOKE,
    ScalingSettings,
    count_parameters,
    gpt_parameter_count,
    match_gpt,
    run_scaling,
    size_plan,
)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "report"
    report = run_scaling(ScalingSettings(out_dir=str(out), **SMOKE), command="smoke")
    return out, report


def test_smoke_run_writes_the_report(smoke_report):
    out, report = smoke_report
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "scaling.png", "runs"}
    assert json.loads((out / "report.json").read_text()) == report
    sizes, seeds = SMOKE["sizes"], [1337, 1338]
    # Every size trained both families with every seed, on the same token budget.
    assert sorted((r["n"], r["seed"], r["family"]) for r in report["runs"]) == sorted(
        (n, s, f) for n in sizes for s in seeds for f in FAMILIES
    )
    assert {r["tokens"] for r in report["runs"]} == {SMOKE["tokens"]}
    assert all(r["final_val_loss"] is not None and r["tokens_per_s"] > 0 for r in report["runs"])
    for fam in FAMILIES:
        params = [r["params"] for r in report["summary"] if r["family"] == fam]
        assert params == sorted(params) and len(set(params)) == len(sizes)
    for size in report["sizes"]:
        assert abs(size["mismatch"]) <= MATCH_TOLERANCE
    text = (out / "report.md").read_text()
    for heading in (
        "## Sizes",
        "## Results",
        "## BDH against GPT",
        "## The paper's figure next to ours",
        "## BDH-GPU' (the gating variant)",
    ):
        assert heading in text
    for row in report["summary"]:
        assert f"| {row['family']} | {row['n']:,} | {row['params']:,} | " in text
    assert (
        "val loss seed 1337 | val loss seed 1338 | mean | mean at half the budget | tokens/s (shared machine)"
        in text
    )
    assert [p["n"] for p in report["verdict"]["per_size"]] == sizes
    # Fig. 7 beside ours: its six sizes, and one plain verdict per comparison.
    assert "| 25M | 0.457 | 0.425* | 0.425 | +7.5% |" in text
    assert text.count("**agrees**") + text.count("**does not agree**") == 4


def test_an_existing_report_directory_needs_force(smoke_report, capsys):
    out, _ = smoke_report
    with pytest.raises(SystemExit) as done:
        main(["experiment", "scaling", "--out", str(out), "--smoke"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1


@pytest.mark.parametrize("grid", list(GRIDS))
def test_each_grid_builds_bdh_grown_by_n_and_gpt_at_its_parameter_count(grid):
    settings = ScalingSettings(out_dir="x", grid=grid)
    vocab = 65 if GRIDS[grid].tokenizer == "char" else 256
    plan = size_plan(settings, vocab)
    assert len(plan) >= 4
    bdh_params = [size["params"]["bdh"] for size in plan]
    assert bdh_params == sorted(bdh_params) and bdh_params[-1] / bdh_params[0] >= 20
    for size in plan:
        bdh = size["bdh"]
        # Only n changes: d, heads and layers are the grid's.
        assert {k: bdh[k] for k in GRIDS[grid].bdh} == GRIDS[grid].bdh
        assert bdh["mlp_internal_dim_multiplier"] * bdh["n_embd"] == size["n"]
        d = bdh["n_embd"]
        assert size["params"]["bdh"] == 3 * size["n"] * d + 2 * vocab * d
        gpt = size["gpt"]
        assert gpt["block_size"] == settings.block_size and gpt["n_embd"] % gpt["n_head"] == 0
        assert size["params"]["gpt"] == gpt_parameter_count(
            gpt["n_layer"], gpt["n_embd"], vocab, gpt["block_size"]
        )
        assert abs(size["params"]["gpt"] / size["params"]["bdh"] - 1) <= MATCH_TOLERANCE


def test_the_paper_grid_spans_the_papers_sizes():
    plan = size_plan(ScalingSettings(out_dir="x", grid="paper"), 256)
    millions = [round(size["params"]["bdh"] / 1e6) for size in plan]
    assert millions == [25, 50, 101, 201, 403, 805]
    gpt_millions = [size["params"]["gpt"] / 1e6 for size in plan]
    assert 24 < gpt_millions[0] and gpt_millions[-1] < 830


def test_gpt_parameter_count_is_the_models():
    for depth, width, vocab, block in [(1, 8, 65, 16), (6, 48, 65, 64), (12, 768, 256, 512)]:
        config = dict(
            n_layer=depth, n_embd=width, n_head=width // 8, block_size=block, vocab_size=vocab
        )
        assert count_parameters("gpt", config) == gpt_parameter_count(depth, width, vocab, block)


def test_match_gpt_prefers_the_aspect_and_refuses_what_it_cannot_match():
    target = gpt_parameter_count(12, 768, 256, 512)
    assert match_gpt(target, 256, 512, 64, 64.0) == dict(
        n_layer=12, n_embd=768, n_head=12, block_size=512
    )
    with pytest.raises(ConfigError, match="no GPT shape"):
        match_gpt(1000, 256, 512, 64, 64.0)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(grid="gpu"), "unknown grid"),
        (dict(sizes=[64]), "at least two increasing"),
        (dict(sizes=[256, 64]), "at least two increasing"),
        (dict(sizes=[64, 100]), "multiple of d=64"),
        (dict(tokens=10), "fewer than one step"),
        (dict(seeds=0), "seeds must be"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ConfigError, match=message):
        ScalingSettings(out_dir="x", **changes)


def test_bad_sizes_at_the_cli_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["experiment", "scaling", "--out", str(tmp_path / "r"), "--sizes", "64,x"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --sizes") and err.count("\n") == 1
