"""`bdh experiment merging`: the smoke configuration end to end, and its refusals."""

from __future__ import annotations

import copy
import json

import pytest

from bdh.cli import main
from bdh.errors import ConfigError
from bdh.experiments.merging import (
    MODELS,
    SMOKE,
    MergingSettings,
    _agreement,
    _readings,
    _verdicts,
    run_merging,
)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("merging") / "report"
    settings = MergingSettings(out_dir=str(out), data_b="smoke-fortunes", **SMOKE)
    return out, run_merging(settings, command="smoke")


def test_smoke_run_writes_the_report(smoke_report):
    out, report = smoke_report
    assert {p.name for p in out.iterdir()} == {
        "report.md",
        "report.json",
        "bits_per_byte.png",
        "runs",
    }
    assert json.loads((out / "report.json").read_text()) == report
    assert list(report["models"]) == list(MODELS)
    assert set(report["corpora"]) == {"0", "A", "B", "A+B"}
    text = (out / "report.md").read_text()
    header = "| model | 0: shakespeare | A: python-stdlib | B: smoke-fortunes | parameters |"
    assert header in text
    for name, model in report["models"].items():
        assert set(model["eval"]) == {"0", "A", "B"}
        cells = [f"{model['eval'][r]['bits_per_byte']:.3f}" for r in ("0", "A", "B")]
        assert f"| {name} | " + " | ".join(cells) + " | " in text
        for role, e in model["eval"].items():  # whole windows of the block size, up to the cap
            windows = (report["corpora"][role]["val_bytes"] - 1) // SMOKE["block_size"]
            assert e["tokens"] == min(SMOKE["eval_tokens"], windows * SMOKE["block_size"])
        assert set(model["samples"]) == {"A", "B"}
    for section in (
        "## Targets",
        "## What the numbers say",
        "## The paper's claim next to ours",
        "## Samples",
    ):
        assert section in text
    assert "- Ours: at this scale, our result " in text
    # Each model trained what it says, from the model it says.
    configs = {n: m["train_config"] for n, m in report["models"].items()}
    assert configs["base"]["init_from"] is None and configs["base"]["steps"] == SMOKE["base_steps"]
    assert configs["+A"]["init_from"].endswith("runs/base") and configs["+A"]["data"].endswith(
        "python-stdlib.txt"
    )
    assert configs["+B"]["init_from"].endswith("runs/base") and configs["+B"]["data"].endswith(
        "smoke-fortunes.txt"
    )
    assert configs["merged"] is None
    assert (
        configs["merged+ft"]["init_from"].endswith("runs/merged")
        and configs["merged+ft"]["steps"] == SMOKE["mix_steps"]
    )


def test_the_parameter_counts_add_up(smoke_report):
    _, report = smoke_report
    p = {n: m["parameters"] for n, m in report["models"].items()}
    assert p["base"] == p["+A"] == p["+B"]
    assert p["base"]["total"] == p["base"]["neuron"] + p["base"]["shared"]
    # merged = the neurons of both parents + one embed and lm_head.
    assert p["merged"]["total"] == p["+A"]["neuron"] + p["+B"]["neuron"] + p["+A"]["shared"]
    assert p["merged"]["neurons_per_head"] == 2 * p["base"]["neurons_per_head"]
    assert p["merged+ft"] == p["merged"]
    assert report["parameter_check"]["holds"] is True


def test_the_verdicts_follow_the_numbers(smoke_report):
    _, report = smoke_report
    bpb = {
        n: {r: e["bits_per_byte"] for r, e in m["eval"].items()}
        for n, m in report["models"].items()
    }
    verdicts = {v["target"]: v["met"] for v in report["verdicts"]}
    assert len(verdicts) == 6
    assert verdicts["fine-tuning on A helps on A: +A below base"] == (
        bpb["+A"]["A"] < bpb["base"]["A"]
    )
    keeps_b = bpb["merged"]["B"] < bpb["base"]["B"] and bpb["merged"]["B"] < bpb["+A"]["B"]
    assert verdicts["the merged model keeps B: below base and below +A on B"] == keeps_b


def test_an_existing_report_directory_needs_force(smoke_report, capsys):
    out, _ = smoke_report
    with pytest.raises(SystemExit) as done:
        main(["experiment", "merging", "--out", str(out), "--smoke"])
    assert done.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="corpus B is needed"):
        run_merging(MergingSettings(out_dir=str(tmp_path / "r")))
    with pytest.raises(ConfigError, match="shared"):
        MergingSettings(out_dir="x", shared="sum")
    with pytest.raises(ConfigError, match="mix_steps"):
        MergingSettings(out_dir="x", mix_steps=-1)


def test_the_agreement_sentence_follows_the_verdicts(smoke_report):
    _, report = smoke_report
    fake = copy.deepcopy(report)
    models = fake["models"]
    for role in ("A", "B"):  # base worst, the specialists best, the merge between them
        for name, bpb in (
            ("base", 3.0),
            ("+A", 2.0),
            ("+B", 2.0),
            ("merged", 2.5),
            ("merged+ft", 2.2),
        ):
            models[name]["eval"][role]["bits_per_byte"] = bpb
        models["+B" if role == "A" else "+A"]["eval"][role]["bits_per_byte"] = 2.9
    fake["verdicts"] = _verdicts({n: m["eval"] for n, m in models.items()})
    text = _agreement(fake)
    assert "our result agrees with the claim" in text and "still behind a specialist" in text
    assert "keeps 50% of +A's gain over base" in " ".join(_readings(fake))
    models["merged"]["eval"]["B"]["bits_per_byte"] = 3.5  # worse than base on B
    fake["verdicts"] = _verdicts({n: m["eval"] for n, m in models.items()})
    assert "agrees only in part" in _agreement(fake)
    models["merged"]["eval"]["A"]["bits_per_byte"] = 3.5
    fake["verdicts"] = _verdicts({n: m["eval"] for n, m in models.items()})
    assert "does not agree" in _agreement(fake)
