from __future__ import annotations

import json

from bdh.cli import main


def test_analyze_writes_json_and_figures(bdh_checkpoint, gpt_checkpoint, tmp_path, capsys):
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps({"a": ["dog", "cat"], "b": ["king", "queen"]}))
    out = tmp_path / "report"
    try:
        main([
            "analyze", str(bdh_checkpoint), "--text", "Hear me speak.", "--out", str(out),
            "--baseline", str(gpt_checkpoint), "--groups", str(groups), "--lengths", "8,128",
        ])  # fmt: skip
    except SystemExit as done:
        assert done.code == 0
    data = json.loads((out / "analysis.json").read_text())
    assert data["tokens"] == len(b"Hear me speak.")
    assert 0 < data["sparsity"]["x"]["overall_active"] < 1
    assert data["baseline"]["mlp_sparsity"]["overall_active"] > 0.99
    assert data["monosemantic_neurons"]["groups"] == ["a", "b"]
    bdh_mem, gpt_mem = data["memory"]["bdh"], data["memory"]["baseline"]
    assert bdh_mem[0]["used_bytes"] == bdh_mem[1]["used_bytes"]
    assert gpt_mem[1]["used_bytes"] == 16 * gpt_mem[0]["used_bytes"]
    assert gpt_mem[1]["extended_context"]
    for name in ("sparsity", "state", "graph", "monosemantic", "memory"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert "active neurons" in capsys.readouterr().out


def test_analyze_errors_are_one_line(tmp_path, bdh_checkpoint, gpt_checkpoint, capsys):
    for args in (
        ["analyze", str(gpt_checkpoint), "--out", str(tmp_path / "o")],
        ["analyze", str(bdh_checkpoint), "--out", str(tmp_path / "o"), "--layer", "7"],
        ["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        ["analyze", str(bdh_checkpoint), "--out", str(tmp_path / "o"), "--text", ""],
        ["analyze", str(bdh_checkpoint), "--out", str(tmp_path / "o"), "--lengths", "a,b"],
    ):
        try:
            main(args)
        except SystemExit as done:
            assert done.code != 0
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
