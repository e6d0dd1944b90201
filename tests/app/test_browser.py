"""The app served on localhost, driven by Debian's Chromium through Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bdh.app import TAB_NAMES

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium not installed"
)
pytest.importorskip("streamlit")


def test_every_tab_opens_without_errors(app_pair, tmp_path, monkeypatch):
    pytest.importorskip("playwright.sync_api")
    from bdh.app.browser import free_port, screenshot_tabs, serve

    monkeypatch.setenv("BDH_CACHE_DIR", str(tmp_path / "cache"))
    with serve(*app_pair, free_port(), tmp_path / "streamlit.log") as url:
        shots = screenshot_tabs(url, tmp_path / "shots")
    assert [p.name.split("-", 1)[0] for p in shots] == [
        str(i) for i in range(1, len(TAB_NAMES) + 1)
    ]
    for path in shots:
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one


def test_an_exception_box_fails_the_test(app_pair, tmp_path, monkeypatch):
    """A broken checkpoint makes the app raise: the driver must report it, not pass."""
    pytest.importorskip("playwright.sync_api")
    from bdh.app.browser import AppBrowserError, free_port, screenshot_tabs, serve

    broken = tmp_path / "broken"
    shutil.copytree(app_pair[0], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    monkeypatch.setenv("BDH_CACHE_DIR", str(tmp_path / "cache"))
    with serve(broken, app_pair[1], free_port(), tmp_path / "streamlit.log") as url:
        with pytest.raises(AppBrowserError, match="error"):
            screenshot_tabs(url, tmp_path / "shots", timeout_s=60)
