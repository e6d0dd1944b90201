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


def test_analyze_defaults_its_output_and_refuses_an_existing_one(
    bdh_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = ["analyze", str(bdh_checkpoint), "--text", "Hear me.", "--lengths", "8"]
    for expected in (0, 1, 0):
        try:
            main(args)
            code = 0
        except SystemExit as done:
            code = done.code
        err = capsys.readouterr().err.strip()
        assert code == expected, err
        if expected:
            assert err.splitlines() == [
                f"error: output directory 'runs/analysis/{bdh_checkpoint.name}' already exists; "
                "use --force to replace it"
            ]
            args.append("--force")
        assert (tmp_path / "runs" / "analysis" / bdh_checkpoint.name / "analysis.json").is_file()
