"""Drive the served app in Debian's Chromium through Playwright: open every tab, fail on
a Streamlit exception or error box or on any request that leaves localhost, and save
one screenshot per tab. Playwright's own browser downloads are never used."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bdh.app import TAB_NAMES, streamlit_command
from bdh.errors import BDHError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'
IDLE_SELECTOR = '[data-testid="stApp"][data-test-script-state="notRunning"]'


class AppBrowserError(BDHError):
    """The app showed an error, or fetched something from outside localhost."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@contextmanager
def serve(bdh: Path, baseline: Path, port: int, log: Path, timeout: float = 120) -> Iterator[str]:
    """Run the app on localhost:port for the duration of the block; yields its URL."""
    cmd, env = streamlit_command(bdh, baseline, port, headless=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise AppBrowserError(f"streamlit exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise AppBrowserError(f"the app did not come up within {timeout:.0f} s; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _raise_on_errors(page: Any, where: str) -> None:
    errors = page.locator(ERROR_SELECTOR)
    if errors.count():
        raise AppBrowserError(f"{where} shows an error: {errors.first.inner_text()[:500]}")


def screenshot_tabs(
    url: str, out_dir: Path, timeout_s: float = 180, live_training_s: float = 0
) -> list[Path]:
    """Open every tab of the app at url; save out_dir/<n>-<tab>.png; raise on any error.

    With live_training_s > 0 the Live Training tab starts a run, is captured that many
    seconds later, and the run is stopped.
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    paths = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1600})

            def record(request: Any) -> None:
                host = urlparse(request.url).hostname
                if host not in ("localhost", "127.0.0.1") and not request.url.startswith(
                    ("data:", "blob:")
                ):
                    outside.append(request.url)

            page.on("request", record)
            page.goto(url)
            page.wait_for_selector(
                f'[data-testid="stMetric"], {ERROR_SELECTOR}', timeout=timeout_s * 1000
            )
            page.wait_for_selector(IDLE_SELECTOR, timeout=timeout_s * 1000)
            _raise_on_errors(page, "the first page")
            for number, name in enumerate(TAB_NAMES, 1):
                page.get_by_role("tab", name=name).click()
                page.wait_for_selector(IDLE_SELECTOR, timeout=timeout_s * 1000)
                page.wait_for_timeout(800)  # plotly draws after the tab becomes visible
                live = name == "Live Training" and live_training_s > 0
                if live:
                    page.get_by_role("button", name="Start training").click()
                    page.wait_for_timeout(live_training_s * 1000)
                _raise_on_errors(page, f"tab {name!r}")
                path = out_dir / f"{number}-{_slug(name)}.png"
                page.screenshot(path=str(path), full_page=True)
                paths.append(path)
                if live:
                    page.get_by_role("button", name="Stop (SIGTERM)").click()
                    page.wait_for_selector(IDLE_SELECTOR, timeout=timeout_s * 1000)
        finally:
            browser.close()
    if outside:
        raise AppBrowserError(f"the app fetched from outside localhost: {sorted(set(outside))[:5]}")
    return paths
