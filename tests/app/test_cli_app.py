from __future__ import annotations

import shutil

from bdh.app import DEFAULT_PAIR, app_cache_dir
from bdh.cli import main


def run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_prepare_reuses_a_cached_default_pair(app_pair, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BDH_CACHE_DIR", str(tmp_path))
    assert app_cache_dir() == tmp_path / "app"
    for source, run_cfg in zip(app_pair, DEFAULT_PAIR):
        shutil.copytree(source, tmp_path / "app" / f"{run_cfg.model}-tiny-shakespeare")
    assert run(["app", "--prepare"]) == 0
    out = capsys.readouterr().out
    assert "bdh-tiny-shakespeare" in out and "gpt-tiny-shakespeare" in out


def test_app_flag_errors_are_one_line(app_pair, tmp_path, capsys):
    assert run(["app", "--bdh", str(app_pair[0])]) != 0
    assert capsys.readouterr().err.strip().startswith("error: give both --bdh and --baseline")
    assert run(["app", "--bdh", str(tmp_path), "--baseline", str(app_pair[1])]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --bdh") and "not a checkpoint" in err
