from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


def test_default_pair_is_trained_once(tmp_path, monkeypatch):
    import bdh.app
    from bdh.app import DefaultRun, ensure_default_pair
    from bdh.checkpoint import load_checkpoint

    quick = tuple(
        DefaultRun(m, steps=2, batch_size=2, block_size=16, eval_tokens=256) for m in ("bdh", "gpt")
    )
    monkeypatch.setattr(bdh.app, "DEFAULT_PAIR", quick)
    (tmp_path / "bdh-tiny-shakespeare").mkdir()
    (tmp_path / "bdh-tiny-shakespeare" / "metrics.jsonl").write_text("")  # an interrupted try
    seen: list[tuple[str, int, int]] = []
    paths = ensure_default_pair(tmp_path, on_progress=lambda *a: seen.append(a))
    assert [load_checkpoint(p)[0].model_type for p in paths] == ["bdh", "gpt"]
    assert ("bdh", 2, 2) in seen and ("gpt", 2, 2) in seen
    stamp = (paths[0] / "model.safetensors").stat().st_mtime_ns
    seen.clear()
    assert ensure_default_pair(tmp_path, on_progress=lambda *a: seen.append(a)) == paths
    assert not seen and (paths[0] / "model.safetensors").stat().st_mtime_ns == stamp


def test_prepare_draws_one_progress_bar_per_model(app_pair, monkeypatch, capsys):
    import bdh.app

    def fake_pair(on_progress):
        for model in ("bdh", "gpt"):
            for step in range(10, 301, 10):
                on_progress(model, step, 300)
        return app_pair

    monkeypatch.setattr(bdh.app, "ensure_default_pair", fake_pair)
    assert run(["app", "--prepare"]) == 0
    err = capsys.readouterr().err
    # what a terminal shows: each line as its last carriage-return rewrite left it
    shown = [line.rsplit("\r", 1)[-1] for line in err.split("\n") if line.strip()]
    bars = [line for line in shown if "training default" in line]
    assert len(bars) == 2, shown
    assert "300/300" in bars[0] and "training default bdh" in bars[0]
    assert "300/300" in bars[1] and "training default gpt" in bars[1]
    assert err.count("| 0/300") == 2  # each bar started once


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the child")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_app_stops_streamlit_and_frees_the_port(app_pair, signum):
    from bdh.app.browser import free_port

    port = free_port()
    parent = subprocess.Popen(
        [sys.executable, "-m", "bdh", "app", "--bdh", str(app_pair[0]),
         "--baseline", str(app_pair[1]), "--port", str(port), "--headless"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    children: list[int] = []
    try:
        deadline = time.time() + 120
        while True:  # up when the health endpoint answers
            assert parent.poll() is None, parent.stderr.read().decode()
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline, "the app did not come up"
                time.sleep(0.5)
        children = _children(parent.pid)
        assert children, "streamlit runs as a child process"
        parent.send_signal(signum)
        assert parent.wait(timeout=30) == 128 + signum
        assert parent.stderr.read().decode().count("Traceback") == 0
        assert not [c for c in children if _alive(c)]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("localhost", port))  # free again
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in children:  # left behind by a failure
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
