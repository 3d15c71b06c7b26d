"""The dashboard in a real headless browser (Debian's ``chromium``).

A real uvicorn server on 127.0.0.1 serves the sample data; Chromium loads the pages, takes a
screenshot (checked to be a non-trivial PNG) and dumps the DOM it rendered, which must show the
expected plan names and statuses. Skipped, saying why, when Chromium is not installed
(``apt-get install chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from app.dashboard.demo import DEMO_NOW, demo_dead_letters, demo_store
from app.dashboard.router import create_dashboard_router

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("PLANGATE_REQUIRE_BROWSER"):
    # .ci/run installs chromium and sets this: in CI a missing browser is a failure, not a skip
    raise RuntimeError("chromium is required (PLANGATE_REQUIRE_BROWSER) but not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    app = FastAPI()
    app.include_router(
        create_dashboard_router(
            store=demo_store(), now=lambda: DEMO_NOW, dead_letters=demo_dead_letters()
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):  # wait for the socket, not a timed assertion
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _screenshot_and_dom(url: str, tmp_path: Path, name: str, size: str) -> str:
    shot = tmp_path / f"{name}.png"
    done = _chromium([f"--window-size={size}", f"--screenshot={shot}", url], tmp_path / "p1")
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a rendered page, not a blank one
    dom = _chromium(["--dump-dom", url], tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-2000:]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom.stdout))


def test_main_page_in_chromium(server, tmp_path):
    text = _screenshot_and_dom(server + "/", tmp_path, "dashboard", "1400,1500")
    assert re.search(r"dns-cutover .*pending 1/2", text)
    assert re.search(r"canary-rollout prod aborted", text)
    assert re.search(r"cache-flush prod failed", text)
    assert re.search(r"db-migrate prod succeeded", text)
    assert "search-api" in text and "Dead-lettered deliveries" in text


def test_run_page_in_chromium(server, tmp_path):
    text = _screenshot_and_dom(server + "/runs/run-80c1", tmp_path, "run", "1400,900")
    assert "Run run-80c1" in text
    assert re.search(r"failed .*flush-eu", text)
    assert "HTTP 503 from cdn.example.net" in text
